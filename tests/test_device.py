"""`--device auto|cpu|gpu`: every combination of build, visible GPUs and launcher rank."""

import itertools

import pytest

from picosparse.device import Device, DeviceError, Facts, decide

BUILDS = (False, True)
GPUS = (0, 1, 4)
USE_GPU = (False, True)
RANKS = ((1, 0, None), (2, 1, 1), (4, 3, 3))  # (world, rank, launcher's dev_id)


def expected(requested, use_gpu, f):
    """The rule, written independently of decide(): a place or the error's key phrase."""
    if requested == "cpu":
        return "cpu"
    if requested == "gpu" and not f.cuda_build:
        return "error: this Paddle build has no CUDA"
    if requested == "gpu" and f.gpus == 0:
        return "error: no GPU is visible"
    wants = requested == "gpu" or (f.cuda_build and f.gpus > 0 and use_gpu)
    if not wants:
        return "cpu"
    i = 0 if f.dev_id is None else f.dev_id
    return f"gpu:{i}" if i < f.gpus else f"error: was given GPU {i} but only {f.gpus}"


@pytest.mark.parametrize("requested,use_gpu,cuda,gpus,ranks", list(itertools.product(
    ("auto", "cpu", "gpu"), USE_GPU, BUILDS, GPUS, RANKS)))
def test_every_combination(requested, use_gpu, cuda, gpus, ranks):
    world, rank, dev_id = ranks
    f = Facts(cuda_build=cuda, gpus=gpus if cuda else 0, world=world, rank=rank, dev_id=dev_id)
    want = expected(requested, use_gpu, f)
    if want.startswith("error: "):
        with pytest.raises(DeviceError) as e:
            decide(requested, use_gpu, f)
        msg = str(e.value)
        assert want[len("error: "):] in msg and msg.startswith(f"--device {requested}")
        assert "\n" not in msg
        return
    d = decide(requested, use_gpu, f)
    assert d.place == want
    assert d.is_gpu == want.startswith("gpu")
    assert "\n" not in d.line() and d.line().startswith(f"device: {want} (")
    assert (f"rank {rank} of {world}" in d.reason) == (world > 1)


def test_reasons_name_the_deciding_fact():
    cpu_build = Facts(cuda_build=False, gpus=0)
    assert decide("auto", True, cpu_build).line() == \
        "device: cpu (auto: this Paddle build has no CUDA)"
    assert decide("auto", True, Facts(True, 0)).reason == "auto: no GPU is visible"
    assert decide("auto", False, Facts(True, 2)).reason.startswith(
        "auto: the config sets use_gpu: false")
    assert decide("auto", True, Facts(True, 2)) == Device(
        "gpu:0", "auto: use_gpu: true and 2 GPU(s) visible")
    assert decide("cpu", True, Facts(True, 2)).reason == "--device cpu"
    # under the launcher each rank takes the GPU the launcher gave it
    assert decide("gpu", False, Facts(True, 4, world=4, rank=2, dev_id=2)).place == "gpu:2"
    with pytest.raises(DeviceError, match="expected one of auto, cpu, gpu"):
        decide("tpu", False, cpu_build)


def test_cli_device_gpu_on_this_cpu_build(tiny_data, tmp_path):
    """This machine's Paddle has no CUDA: --device gpu is one line and exit 2, before work."""
    from click.testing import CliRunner
    from picosparse.cli import cli
    from conftest import DEMO_CFG, tiny_overrides
    from picosparse import paddle_env
    assert not paddle_env.stack().paddle.is_compiled_with_cuda()
    ov = sum((["-o", o] for o in tiny_overrides(tiny_data, 1)), [])
    want = ("Error: --device gpu: this Paddle build has no CUDA; install the CUDA build of "
            "paddlepaddle (README: GPU training) or use --device cpu")
    for args in (["train", "-c", str(DEMO_CFG), "--from-scratch", "--sparsity", "0",
                  "--out", str(tmp_path / "t")],
                 ["eval", "-c", str(DEMO_CFG), "--weights", str(tmp_path / "w.pdparams")],
                 ["prune", "-c", str(DEMO_CFG), "--weights", str(tmp_path / "w.pdparams"),
                  "--out", str(tmp_path / "p.pdparams")]):
        r = CliRunner().invoke(cli, args + ov + ["--device", "gpu"])
        assert r.exit_code == 2, r.output
        assert r.output.strip().splitlines() == [want]
    assert not (tmp_path / "t").exists()
    r = CliRunner().invoke(cli, ["train", "-c", str(DEMO_CFG), "--device", "tpu"])
    assert r.exit_code == 2 and r.output == "Error: --device tpu: must be one of auto, cpu, gpu\n"
