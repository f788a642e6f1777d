"""Time .nb files on an ARM board with Paddle-Lite's benchmark_bin over adb.

    picosparse bench --adb SERIAL --benchmark-bin ./benchmark_bin \\
        --model runs/dense/inference/model.nb --model runs/sparse75/inference/model.nb \\
        --threads 1,4 --repeats 50 --warmup 5

Pushes benchmark_bin and the .nb files to /data/local/tmp/picosparse on the device (`adb -s
SERIAL push`), then per thread count and model runs
`benchmark_bin --optimized_model_file=... --input_shape=1,3,S,S:1,2 --threads=T
--power_mode=0 --warmup=W --repeats=R --backend=arm` through `adb -s SERIAL shell` and parses
its report (deploy/benchmark_bin.py). Build benchmark_bin from the same Paddle-Lite release as
the opt that wrote the .nb (v2.13: `./lite/tools/build_android.sh --with_benchmark=ON
full_publish`); a .nb is not readable across releases.
"""

import shlex
import shutil
import subprocess
from pathlib import Path

from picosparse.deploy import benchmark_bin
from picosparse.errors import DataError, PicosparseError, StackError

REMOTE_DIR = "/data/local/tmp/picosparse"


class Adb:
    def __init__(self, serial, adb="adb", timeout=900):
        self.exe = shutil.which(adb)
        if not self.exe:
            raise StackError(f"--adb {serial}: `{adb}` not found on PATH (install Android "
                             "platform-tools)")
        self.serial, self.timeout = serial, timeout

    def __call__(self, *args):
        cmd = [self.exe, "-s", self.serial, *args]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise PicosparseError(f"--adb {self.serial}: `adb {args[0]}` timed out after "
                                  f"{self.timeout} s") from None
        if r.returncode != 0:
            lines = [ln for ln in (r.stderr + r.stdout).strip().splitlines() if ln.strip()]
            why = lines[-1].strip()[:200] if lines else f"exit code {r.returncode}"
            raise PicosparseError(f"--adb {self.serial}: `adb {args[0]}` failed: {why}")
        return r.stdout

    def shell(self, command):
        return self("shell", command)


def bench_adb(models, serial, bench_bin, threads, repeats, warmup, power_mode=0, adb="adb"):
    """models: [(name, nb_path, {input_name: shape})]. Returns {name: {threads: parsed}}."""
    bench_bin = Path(bench_bin)
    if not bench_bin.is_file():
        raise DataError(f"--benchmark-bin {bench_bin}: file does not exist")
    dev = Adb(serial, adb)
    dev.shell(f"mkdir -p {REMOTE_DIR}")
    remote_bin = f"{REMOTE_DIR}/benchmark_bin"
    dev("push", str(bench_bin), remote_bin)
    dev.shell(f"chmod +x {remote_bin}")
    remote = {}
    for i, (name, nb, _shapes) in enumerate(models):
        remote[name] = f"{REMOTE_DIR}/m{i}_{Path(nb).name}"
        dev("push", str(nb), remote[name])
    results = {name: {} for name, _, _ in models}
    for t in threads:
        for name, _nb, shapes in models:
            shape_arg = ":".join(",".join(str(d) for d in s) for s in shapes.values())
            cmd = (f"cd {REMOTE_DIR} && ./benchmark_bin "
                   f"--optimized_model_file={shlex.quote(remote[name])} "
                   f"--input_shape={shape_arg} --threads={int(t)} --power_mode={int(power_mode)} "
                   f"--warmup={int(warmup)} --repeats={int(repeats)} --backend=arm")
            results[name][int(t)] = benchmark_bin.parse(dev.shell(cmd))
    return results
