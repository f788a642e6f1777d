"""Time .nb files on an ARM board with Paddle-Lite's benchmark_bin over adb.

    picosparse bench --adb SERIAL --benchmark-bin ./benchmark_bin \\
        --model runs/dense/inference/model.nb --model runs/sparse75/inference/model.nb \\
        --threads 1,4 --repeats 50 --warmup 5

Pushes benchmark_bin and the .nb files to /data/local/tmp/picosparse on the device (`adb -s
SERIAL push`), then per thread count and model runs
`benchmark_bin --optimized_model_file=... --input_shape=1,3,S,S:1,2 --threads=T
--power_mode=0 --warmup=W --repeats=R --backend=arm` through `adb -s SERIAL shell` and parses
its report (deploy/benchmark_bin.py). The pushed files are removed from the device at the end
(also after an error), and a run that exceeds its time is killed there. Build benchmark_bin from the same Paddle-Lite release as
the opt that wrote the .nb (v2.13: `./lite/tools/build_android.sh --with_benchmark=ON
full_publish`); a .nb is not readable across releases.
"""

import shlex
import shutil
import subprocess
from pathlib import Path

from picosparse import subproc
from picosparse.deploy import benchmark_bin
from picosparse.errors import DataError, PicosparseError, StackError

REMOTE_DIR = "/data/local/tmp/picosparse"
TIMEOUT = 900  # seconds for one adb command (a push, or one benchmark_bin run)
CLEANUP_TIMEOUT = 30
PID_TAG = "PICOSPARSE_PID="


class AdbTimeout(PicosparseError):
    """An adb command did not finish in time; `output` is what it printed so far."""

    def __init__(self, message, output=""):
        super().__init__(message)
        self.output = output


class Adb:
    def __init__(self, serial, adb="adb", timeout=None):
        self.exe = shutil.which(adb)
        if not self.exe:
            raise StackError(f"--adb {serial}: `{adb}` not found on PATH (install Android "
                             "platform-tools)")
        self.serial, self.timeout = serial, timeout or TIMEOUT

    def __call__(self, *args, timeout=None):
        cmd = [self.exe, "-s", self.serial, *args]
        timeout = timeout or self.timeout
        try:
            r = subproc.run(cmd, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise AdbTimeout(f"--adb {self.serial}: `adb {args[0]}` timed out after "
                             f"{timeout} s", e.output or "") from None
        if r.returncode != 0:
            lines = [ln for ln in (r.stderr + r.stdout).strip().splitlines() if ln.strip()]
            why = lines[-1].strip()[:200] if lines else f"exit code {r.returncode}"
            raise PicosparseError(f"--adb {self.serial}: `adb {args[0]}` failed: {why}")
        return r.stdout

    def shell(self, command, timeout=None):
        return self("shell", command, timeout=timeout)

    def quietly(self, command):
        """Best-effort cleanup on the device: never raises (the real error matters more)."""
        try:
            self.shell(command, timeout=CLEANUP_TIMEOUT)
        except PicosparseError:
            pass


def _remote_pid(output):
    for line in (output or "").replace("\r", "").splitlines():
        if line.startswith(PID_TAG) and line[len(PID_TAG):].strip().isdigit():
            return int(line[len(PID_TAG):])
    return None


def bench_adb(models, serial, bench_bin, threads, repeats, warmup, power_mode=0, adb="adb"):
    """models: [(name, nb_path, {input_name: shape})]. Returns {name: {threads: parsed}}.

    What was pushed is removed from the device afterwards, also on errors; a benchmark_bin
    run that times out is killed on the device by its process id.
    """
    bench_bin = Path(bench_bin)
    if not bench_bin.is_file():
        raise DataError(f"--benchmark-bin {bench_bin}: file does not exist")
    dev = Adb(serial, adb)
    dev.shell(f"mkdir -p {REMOTE_DIR}")
    pushed = []
    try:
        remote_bin = f"{REMOTE_DIR}/benchmark_bin"
        pushed.append(remote_bin)
        dev("push", str(bench_bin), remote_bin)
        dev.shell(f"chmod +x {remote_bin}")
        remote = {}
        for i, (name, nb, _shapes) in enumerate(models):
            remote[name] = f"{REMOTE_DIR}/m{i}_{Path(nb).name}"
            pushed.append(remote[name])
            dev("push", str(nb), remote[name])
        results = {name: {} for name, _, _ in models}
        for t in threads:
            for name, _nb, shapes in models:
                shape_arg = ":".join(",".join(str(d) for d in s) for s in shapes.values())
                # the shell prints its pid, then exec keeps it for benchmark_bin: killable
                cmd = (f"cd {REMOTE_DIR} && echo {PID_TAG}$$ && exec ./benchmark_bin "
                       f"--optimized_model_file={shlex.quote(remote[name])} "
                       f"--input_shape={shape_arg} --threads={int(t)} "
                       f"--power_mode={int(power_mode)} --warmup={int(warmup)} "
                       f"--repeats={int(repeats)} --backend=arm")
                try:
                    out = dev.shell(cmd)
                except AdbTimeout as e:
                    pid = _remote_pid(e.output)
                    if pid:
                        dev.quietly(f"kill -9 {pid}")
                    raise PicosparseError(
                        f"--adb {serial}: benchmark_bin on {name} ({t} thread"
                        f"{'s' * (int(t) > 1)}) did not finish within {dev.timeout} s and was "
                        + ("killed on the device" if pid else "abandoned (no process id to "
                           "kill on the device)")) from None
                out = "\n".join(ln for ln in out.splitlines() if not ln.startswith(PID_TAG))
                results[name][int(t)] = benchmark_bin.parse(out)
    finally:
        if pushed:
            dev.quietly("rm -f " + " ".join(shlex.quote(p) for p in pushed))
        dev.quietly(f"rmdir {REMOTE_DIR} 2>/dev/null || true")  # only if nothing else is in it
    return results
