"""Time models in a child process: `subproc.call_python("picosparse.deploy.worker:time_models",
spec)` from steps/bench.py. A crash of a runtime kills only that process; the parent reports it.

spec: runtime, paths [model dir or .nb], names, inputs (an .npz of "<i>/<name>" arrays),
threads, precision (one hint per path, or one for all), warmup, repeats, kinds ["dense" |
"x86-sparse" | "openvino-ir" per path], per_layer
{"<i>": dense model.pdmodel of the x86-sparse model i}. Timing: deploy/timing.py, one run per
model per round (repeats rounds).
"""


def time_models(runtime, paths, names, inputs, threads, precision, warmup, repeats, kinds=None,
                per_layer=None):
    """-> {"times_ms": [[ms per round] per model], "precisions": [..], "per_layer": {"<i>":
    {"summary", "layers"}}}; a PicosparseError for what the user can fix."""
    import numpy as np  # numpy before any runtime (paddle_env's import order)

    from picosparse.deploy.runtimes import (RUNNERS, OpenVINOIRRunner, X86SparseRunner,
                                            check_inputs)
    from picosparse.deploy.timing import time_rounds
    data = np.load(inputs)
    runners, feeds = [], []
    kinds = kinds or ["dense"] * len(paths)
    if isinstance(precision, str):
        precision = [precision] * len(paths)
    for i, path in enumerate(paths):
        feed = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith(f"{i}/")}
        cls = {"x86-sparse": X86SparseRunner, "openvino-ir": OpenVINOIRRunner}.get(
            kinds[i], RUNNERS[runtime])
        r = cls(path, threads, precision[i])
        check_inputs(r, feed, names[i])
        r.feed(feed)
        runners.append(r)
        feeds.append(feed)
    rounds = time_rounds({i: r.run for i, r in enumerate(runners)}, repeats, warmup=warmup)
    out = {"times_ms": [rounds.wall[i] for i in range(len(runners))],
           "precisions": [r.precision for r in runners]}
    if per_layer:
        # after the timing, so profiling never overlaps the timed runs
        from picosparse.x86.perlayer import per_layer as profile
        out["per_layer"] = {}
        for i, dense in per_layer.items():
            rows, summary = profile(dense, paths[int(i)], feeds[int(i)], threads, repeats)
            out["per_layer"][i] = {"summary": summary, "layers": rows}
    return out
