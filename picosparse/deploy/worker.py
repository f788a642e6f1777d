"""Time models in a child process: `python -m picosparse.deploy.worker SPEC.json`.

SPEC: {"runtime", "paths": [model dir or .nb], "inputs": file.npz ("<i>/<name>" arrays),
"threads", "precision", "warmup", "repeats", "result": file.json, optional "kinds":
["dense" | "x86-sparse" per path] and "per_layer": {"<i>": dense model.pdmodel of the
x86-sparse model i}}. The result file gets {"times_ms": [[per run] per model], "precisions":
[..], "per_layer": {"<i>": {"summary", "layers"}}} or {"error": one-line message}.
Models are timed round-robin (one run of each in turn) so drift in load hits all alike.
A crash of the runtime kills only this process; the parent reports it.
"""

import json
import sys
import time


def time_models(runners, warmup, repeats):
    for r in runners:
        for _ in range(warmup):
            r.run()
    times = [[] for _ in runners]
    for _ in range(repeats):
        for i, r in enumerate(runners):
            t0 = time.perf_counter()
            r.run()
            times[i].append((time.perf_counter() - t0) * 1e3)
    return times


def main(spec_file):
    import numpy as np  # noqa: F401  numpy before any runtime (paddle_env's import order)
    from picosparse.deploy.runtimes import RUNNERS, X86SparseRunner, check_inputs
    from picosparse.errors import PicosparseError
    spec = json.loads(open(spec_file).read())
    try:
        data = np.load(spec["inputs"])
        runners, feeds = [], []
        kinds = spec.get("kinds") or ["dense"] * len(spec["paths"])
        for i, path in enumerate(spec["paths"]):
            feed = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith(f"{i}/")}
            cls = X86SparseRunner if kinds[i] == "x86-sparse" else RUNNERS[spec["runtime"]]
            r = cls(path, spec["threads"], spec["precision"])
            check_inputs(r, feed, spec["names"][i])
            r.feed(feed)
            runners.append(r)
            feeds.append(feed)
        out = {"times_ms": time_models(runners, spec["warmup"], spec["repeats"]),
               "precisions": [r.precision for r in runners]}
        if spec.get("per_layer"):
            # after the timing, so profiling never overlaps the timed runs
            from picosparse.ops.perlayer import per_layer
            out["per_layer"] = {}
            for i, dense in spec["per_layer"].items():
                rows, summary = per_layer(dense, spec["paths"][int(i)], feeds[int(i)],
                                          spec["threads"], spec["repeats"])
                out["per_layer"][i] = {"summary": summary, "layers": rows}
    except PicosparseError as e:
        out = {"error": str(e)}
    with open(spec["result"], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1])
