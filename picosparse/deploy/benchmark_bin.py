"""Parse the text Paddle-Lite's `benchmark_bin` prints (lite/api/tools/benchmark, v2.10+).

Its report is blocks of `key: value` lines under `======= <Name> Info =======` headers, ending
with a Perf block in milliseconds:

    ======= Perf Info =======
    Time(unit: ms):
    init  = 15.305
    first = 43.670
    min   = 32.577
    max   = 32.895
    avg   = 32.723

It reports min/max/avg only (no median or p90). The older lite/api/benchmark.cc (<= v2.9)
logged `latency(ms): <avg>` through glog instead; that is accepted too.
"""

import re

from picosparse.errors import DataError

_PERF = re.compile(r"^\s*(init|first|min|max|avg)\s*=\s*([0-9.eE+-]+)", re.M)
_KV = re.compile(r"^(?:\[[^\]\n]*\][ \t]*)?([A-Za-z][A-Za-z0-9_ ()]*?):[ \t]*(.*?)[ \t]*$", re.M)
_OLD_LATENCY = re.compile(r"latency\(ms\):\s*([0-9.eE+-]+)")
_OLD_MINMAX = re.compile(r"min\s*=\s*([0-9.eE+-]+)\s+max\s*=\s*([0-9.eE+-]+)\s+"
                         r"average\s*=\s*([0-9.eE+-]+)")
_INTS = ("threads", "power_mode", "warmup", "repeats")
_KEYS = {"optimized_model_file": "model", "model_path": "model", "input_shape": "input_shape",
         "benchmark_bin version": "version", "backend": "backend",
         "cpu precision": "cpu_precision", "Brand": "brand", "Model": "device_model",
         "Android Version": "android_version", "threads": "threads",
         "power_mode": "power_mode", "warmup": "warmup", "repeats": "repeats"}


def parse(text):
    """{"min_ms", "max_ms", "avg_ms", "init_ms"|None, "first_ms"|None, "threads"|None,
        "repeats"|None, "warmup"|None, "power_mode"|None, "backend", "cpu_precision",
        "version", "model", "input_shape", "brand", "device_model", "android_version"}."""
    text = text.replace("\r\n", "\n")  # adb shell through a pty ends lines with CRLF
    out = {v: None for v in _KEYS.values()}
    for k, v in _KV.findall(text):
        key = _KEYS.get(k.strip())
        if key and out.get(key) is None and v:
            out[key] = int(v) if key in _INTS and v.lstrip("-").isdigit() else v
    perf = {k: float(v) for k, v in _PERF.findall(text.split("Perf Info", 1)[-1])} \
        if "Perf Info" in text else {}
    if {"min", "max", "avg"} <= set(perf):
        out.update(min_ms=perf["min"], max_ms=perf["max"], avg_ms=perf["avg"],
                   init_ms=perf.get("init"), first_ms=perf.get("first"))
        return out
    m = _OLD_MINMAX.search(text)
    lat = _OLD_LATENCY.search(text)
    if m or lat:
        avg = float(m.group(3)) if m else float(lat.group(1))
        out.update(min_ms=float(m.group(1)) if m else None,
                   max_ms=float(m.group(2)) if m else None, avg_ms=avg,
                   init_ms=None, first_ms=None)
        return out
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    last = lines[-1][:200] if lines else "no output"
    raise DataError(f"benchmark_bin printed no timing (no 'Perf Info' block): {last}")
