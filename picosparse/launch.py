"""`picosparse train --nproc N`: paddle.distributed.launch with N picosparse processes.

CPU processes talk through gloo; on a CUDA build each process gets its own GPU (NCCL). The
launcher's files (workerlog.N, envlog.N, ...) go to OUT/log/, not the current folder. Rank 0's
output is echoed here without Paddle's C++ log lines; when the job fails, the first
`Error: ...` line a rank printed becomes this command's error.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from picosparse import device as D, trainlock
from picosparse.errors import PicosparseError

# Paddle's C++ log lines and the modified-flags banner init_parallel_env prints
NOISE = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d\d|=+( Modified FLAGS detected =+)?$|FLAGS\(name=)")
POLL_S = 0.2


class LaunchError(PicosparseError):
    """The training processes failed without a picosparse error of their own."""


def command(nproc, log_dir, rank_argv):
    """The launcher's command line; `rank_argv` is what each rank runs after `picosparse`."""
    return [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc),
            "--log_dir", str(log_dir), sys.executable, "-u", "-m", "picosparse", *rank_argv]


def plan(nproc, requested, use_gpu, facts):
    """The Device the ranks will use, or a DeviceError saying why N processes cannot run."""
    if facts.world > 1:
        raise D.DeviceError(f"--nproc {nproc}: this process is already one of "
                            f"{facts.world} launched ranks; drop --nproc")
    dev = D.decide(requested, use_gpu, facts)
    if dev.is_gpu and nproc > facts.gpus:
        raise D.DeviceError(f"--nproc {nproc}: only {facts.gpus} GPU(s) visible (one process "
                            "per GPU)")
    if not dev.is_gpu and facts.cuda_build and facts.gpus > 0:
        raise D.DeviceError(f"--nproc {nproc} on cpu: on a CUDA build with GPUs visible the "
                            "launcher gives every process a GPU; use --device gpu (or a CPU "
                            "build of Paddle for CPU processes)")
    return dev


def run(nproc, out, rank_argv, dev, echo=None):
    """Run the job; echo rank 0's lines; raise a PicosparseError when it fails."""
    echo = echo or (lambda line: print(line, flush=True))
    trainlock.check_free(out)  # fail now, not after N processes have started
    log_dir = Path(out).resolve() / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    logs = {i: log_dir / f"workerlog.{i}" for i in range(nproc)}
    start = {i: p.stat().st_size if p.is_file() else 0 for i, p in logs.items()}  # appended to
    env = dict(os.environ)
    if not dev.is_gpu:
        env["PADDLE_DISTRI_BACKEND"] = "gloo"
    with open(log_dir / "launch.log", "ab") as launcher_log:
        proc = subprocess.Popen(command(nproc, log_dir, rank_argv), stdout=launcher_log,
                                stderr=subprocess.STDOUT, env=env)
        pos = start[0]
        old = signal.getsignal(signal.SIGTERM)
        try:
            if _main_thread():
                signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
            while True:
                rc = proc.poll()
                pos = _echo_new(logs[0], pos, echo)
                if rc is not None:
                    break
                time.sleep(POLL_S)
        finally:
            if proc.poll() is None:  # interrupted: stop the launcher, which stops its ranks
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if _main_thread():
                signal.signal(signal.SIGTERM, old)
    if rc != 0:
        raise _failure(nproc, rc, logs, start, log_dir)


def _main_thread():
    import threading
    return threading.current_thread() is threading.main_thread()


def _echo_new(path, pos, echo):
    """Echo the complete lines written to `path` since `pos`; return the new position."""
    if not path.is_file():
        return pos
    with open(path, "rb") as f:
        f.seek(pos)
        chunk = f.read()
    end = chunk.rfind(b"\n") + 1
    for raw in chunk[:end].decode(errors="replace").splitlines():
        if not NOISE.match(raw) and not raw.startswith("Error: "):
            echo(raw)
    return pos + end


def _failure(nproc, rc, logs, start, log_dir):
    last = None
    for i, p in logs.items():
        if not p.is_file():
            continue
        with open(p, "rb") as f:
            f.seek(start[i])
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines()]
        for ln in lines:
            if ln.startswith("Error: "):
                return PicosparseError(ln[len("Error: "):])
        mine = [ln for ln in lines if ln and not NOISE.match(ln)]
        if last is None and mine:
            last = (i, mine[-1])
    tail = f"; last line of workerlog.{last[0]}: {last[1][:200]}" if last else ""
    return LaunchError(f"--nproc {nproc}: the training processes failed (exit code {rc}); "
                       f"logs in {log_dir}{tail}")


def train(cfg, out, nproc, rank_argv, device="auto", pretrained=None, from_scratch=False,
          resume=False):
    """`picosparse train --nproc N`: check what can be checked here, then run the N ranks
    (`rank_argv`: the train command as each rank runs it, without --nproc)."""
    from picosparse import progress
    from picosparse import checkpoint
    from picosparse.steps.train import check_world, preflight
    preflight(cfg, out, pretrained, from_scratch, resume)
    if resume:
        check_world(checkpoint.run_of(out), out, nproc)
    dev = plan(nproc, device, bool(cfg.get("use_gpu", False)), D.facts())
    progress.say(f"launching {nproc} training processes on {'GPUs' if dev.is_gpu else 'cpu'} "
                 f"(paddle.distributed.launch; logs in {Path(out) / 'log'})")
    run(nproc, out, list(rank_argv) + ["--device", device], dev)
