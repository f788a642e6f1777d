"""`picosparse env`: what is installed, and the checks for the stack's known traps."""

import platform
import subprocess
import sys

from picosparse import paddle_env
from picosparse.errors import StackError


def cpu_features():
    """The CPU's name and the vector extensions the kernels and OpenVINO care about."""
    flags, model = set(), None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model is None:
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {"model": model or platform.processor() or platform.machine(),
            "avx2": "avx2" in flags, "avx512f": "avx512f" in flags,
            "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
            "avx512_vnni": "avx512_vnni" in flags, "avx_vnni": "avx_vnni" in flags,
            "fma": "fma" in flags}


def _check(name, ok, detail):
    return {"name": name, "ok": bool(ok), "detail": detail}


_PROBE = """
import json, picosparse.paddle_env as e
p = e.stack().paddle
x = p.ones([2, 2])
cuda = bool(p.is_compiled_with_cuda())
print(json.dumps({"sum": float((x @ x).sum()), "cuda_build": cuda,
                  "cuda_version": p.version.cuda() if cuda else None,
                  "gpus": int(p.device.cuda.device_count()) if cuda else 0}))
"""


def _import_check():
    """(check, device facts) from a child process: the import trap is a segfault."""
    import json
    try:
        r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                           timeout=180)
    except subprocess.TimeoutExpired:
        return _check("import paddle+ppdet+paddleslim", False, "timed out after 180 s"), None
    try:
        probe = json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        probe = None
    if r.returncode == 0 and probe and probe["sum"] == 8.0:
        return (_check("import paddle+ppdet+paddleslim", True, "numpy/cv2 first, then paddle"),
                probe)
    tail = (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
    return _check("import paddle+ppdet+paddleslim", False, tail[:200]), None


def device_report(probe):
    """The Paddle build, the GPUs it sees and what `--device auto` picks for a config with
    `use_gpu: true` (PaddleDetection's runtime.yml default)."""
    from picosparse import device
    if probe is None:
        return None
    facts = device.Facts(cuda_build=probe["cuda_build"], gpus=probe["gpus"])
    auto = device.decide("auto", True, facts)
    return {"paddle_build": f"CUDA {probe['cuda_version']}" if probe["cuda_build"] else "CPU",
            "gpus": probe["gpus"], "auto": auto.place, "auto_reason": auto.reason}


def _opt_check():
    try:
        opt = paddle_env.find_opt()
    except StackError as e:
        return _check("paddle_lite_opt runnable", False, str(e)), None
    try:
        r = subprocess.run([opt, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return _check("paddle_lite_opt runnable", False, f"{opt}: {e}"), None
    out = (r.stdout + r.stderr).strip().splitlines()
    ver = out[-1].strip() if out else ""
    return _check("paddle_lite_opt runnable", r.returncode == 0, f"{opt} ({ver})"), ver


def report():
    versions = {"python": platform.python_version()}
    for dist in ("paddlepaddle", "paddlepaddle-gpu", "paddleslim", "paddledet", "paddlelite",
                 "numpy", "opencv-python", "openvino"):
        versions[dist] = paddle_env.version(dist)
    checks = [_check("python 3.10", sys.version_info[:2] == (3, 10),
                     f"{versions['python']} (paddlelite wheels stop at cp310)")]
    wheels = [d for d in ("paddlepaddle", "paddlepaddle-gpu") if versions[d]]
    checks.append(_check("one Paddle wheel", len(wheels) == 1,
                         ", ".join(f"{d} {versions[d]}" for d in wheels) or "none installed"))
    for dist, want in paddle_env.PINNED.items():
        have = versions.get(dist)
        if dist == "paddlepaddle":
            have = versions["paddlepaddle"] or versions["paddlepaddle-gpu"]
        checks.append(_check(f"{dist}=={want}", have == want, have or "not installed"))
    np_v = versions["numpy"]
    checks.append(_check("numpy < 2", np_v is not None and int(np_v.split(".")[0]) < 2,
                         f"{np_v} (PaddleSlim 2.6 uses np.product)"))
    opt_check, opt_ver = _opt_check()
    versions["paddle_lite_opt"] = opt_ver
    checks.append(opt_check)
    check, probe = _import_check()
    checks.append(check)
    return {"ok": all(c["ok"] for c in checks), "versions": versions,
            "cpu": {"machine": platform.machine(), "features": cpu_features()},
            "device": device_report(probe), "checks": checks}
