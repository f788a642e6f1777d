"""Which device a command runs on (`--device auto|cpu|gpu`), decided once and said in one line.

`decide` is a pure function of what was asked and what this machine has (`Facts`), so every
combination (CPU or CUDA build, GPUs visible or not, launcher ranks) is tested without a GPU.
`select` gathers the facts from Paddle and the launcher's environment; `use` makes the choice
Paddle's default device (paddle_env applies it too when the stack is imported later).
"""

import os
from dataclasses import dataclass

from picosparse.errors import PicosparseError

CHOICES = ("auto", "cpu", "gpu")


class DeviceError(PicosparseError):
    """The requested device does not exist here, or cannot run what the config asks."""


@dataclass(frozen=True)
class Facts:
    cuda_build: bool  # paddle.is_compiled_with_cuda()
    gpus: int  # GPUs this process can see
    world: int = 1  # processes in the job (paddle.distributed.launch)
    rank: int = 0
    dev_id: int = None  # the GPU the launcher gave this rank (ParallelEnv().dev_id), if any


@dataclass(frozen=True)
class Device:
    place: str  # "cpu" or "gpu:N", as paddle.set_device takes it
    reason: str

    @property
    def is_gpu(self):
        return self.place.startswith("gpu")

    def line(self):
        return f"device: {self.place} ({self.reason})"


def decide(requested, use_gpu, facts):
    """The device for `requested` ("auto", "cpu", "gpu") given the config's `use_gpu`."""
    if requested not in CHOICES:
        raise DeviceError(f"--device {requested}: expected one of {', '.join(CHOICES)}")
    ranks = f", rank {facts.rank} of {facts.world}" if facts.world > 1 else ""
    if requested == "cpu":
        return Device("cpu", "--device cpu" + ranks)
    if requested == "gpu":
        if not facts.cuda_build:
            raise DeviceError("--device gpu: this Paddle build has no CUDA; install the CUDA "
                              "build of paddlepaddle (README: GPU training) or use --device cpu")
        if facts.gpus < 1:
            raise DeviceError("--device gpu: no GPU is visible to Paddle (check the driver and "
                              "CUDA_VISIBLE_DEVICES); use --device cpu")
        return Device(f"gpu:{_gpu_index(facts, '--device gpu')}", "--device gpu" + ranks)
    if not facts.cuda_build:
        return Device("cpu", "auto: this Paddle build has no CUDA" + ranks)
    if facts.gpus < 1:
        return Device("cpu", "auto: no GPU is visible" + ranks)
    if not use_gpu:
        return Device("cpu", "auto: the config sets use_gpu: false; --device gpu overrides"
                      + ranks)
    return Device(f"gpu:{_gpu_index(facts, '--device auto')}",
                  f"auto: use_gpu: true and {facts.gpus} GPU(s) visible" + ranks)


def _gpu_index(facts, flag):
    i = facts.dev_id if facts.dev_id is not None else 0
    if not 0 <= i < facts.gpus:
        raise DeviceError(f"{flag}: rank {facts.rank} was given GPU {i} but only {facts.gpus} "
                          "are visible; launch fewer processes or fix CUDA_VISIBLE_DEVICES")
    return i


def facts():
    """This process's Facts, from Paddle and the launcher's environment variables."""
    from picosparse import paddle_env
    paddle = paddle_env.stack().paddle
    cuda = bool(paddle.is_compiled_with_cuda())
    gpus = int(paddle.device.cuda.device_count()) if cuda else 0
    world, rank = world_and_rank()
    dev_id = None
    if world > 1 and os.environ.get("FLAGS_selected_gpus"):
        dev_id = int(paddle.distributed.ParallelEnv().dev_id)
    return Facts(cuda_build=cuda, gpus=gpus, world=world, rank=rank, dev_id=dev_id)


def world_and_rank():
    """(processes in the job, this one's rank): 1, 0 outside paddle.distributed.launch."""
    world = int(os.environ.get("PADDLE_TRAINERS_NUM", "1") or 1)
    rank = int(os.environ.get("PADDLE_TRAINER_ID", "0") or 0)
    return world, rank


_CURRENT = {"place": "cpu"}


def current_place():
    """The place `use` chose ("cpu" until a command chooses)."""
    return _CURRENT["place"]


def use(dev):
    """Make `dev` Paddle's default device for this process."""
    from picosparse import paddle_env
    _CURRENT["place"] = dev.place
    paddle_env.stack().paddle.set_device(dev.place)
    return dev


def select(requested, cfg):
    """Decide for `cfg` (its `use_gpu`) on this machine and make it the default device."""
    return use(decide(requested, bool(cfg.get("use_gpu", False)), facts()))
