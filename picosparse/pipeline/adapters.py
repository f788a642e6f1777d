"""The one place the pipeline calls step functions: `REGISTRY[kind](params, out, ctx)`.

`params` are the step's resolved parameters (defaults filled, references substituted),
`out` the folder to write into (see schema.Kind.where), `ctx` has name, run_dir, resume,
pipeline. Each adapter returns a dict holding at least the kind's declared outputs.
Step modules are imported lazily so validation and --dry-run never touch the Paddle stack.
Tests may replace entries of REGISTRY with tiny functions to exercise the engine.
"""

import importlib
from pathlib import Path

from picosparse.atomic import write_json, write_text


def _step_fn(module, attr):
    """The step function, looked up when the step runs (tests replace module attributes)."""
    return getattr(importlib.import_module(module), attr)


def _detector(p):
    from picosparse.config import load_detector
    return load_detector(p["config"], overrides=p.get("overrides") or (),
                         slim_config=p.get("slim_config"), sparsity=p.get("sparsity"))


def _weights(p):
    """Local weights for a path or URL (published weights are downloaded once, cached)."""
    from picosparse.weights import resolve
    return resolve(p["weights"], flag="weights")


def run_data(p, out, ctx):
    synthesize = _step_fn("picosparse.data.synth", "synthesize")
    return synthesize(out, seed=p["seed"], num_train=p["num_train"], num_val=p["num_val"],
                      size=p["size"])


def run_train(p, out, ctx):
    train = _step_fn("picosparse.steps.train", "train")
    return train(_detector(p), out, pretrained=p["pretrained"], from_scratch=p["from_scratch"],
                 resume=ctx.resume, do_eval=p["eval"], seed=p["seed"])


def run_prune(p, out, ctx):
    oneshot = _step_fn("picosparse.steps.prune", "oneshot")
    cfg = _detector(p)
    res = dict(oneshot(cfg, _weights(p), Path(out) / "model.pdparams"))
    # downstream eval/export need the config that goes with these weights, like train's
    res["config"] = Path(out) / "config.yml"
    write_text(res["config"], cfg.dump())
    return res


def run_eval(p, out, ctx):
    if p.get("model") is not None:
        from picosparse.steps.evaluate import evaluate_model
        res = dict(evaluate_model(_detector(p), p["model"]))
    else:
        evaluate = _step_fn("picosparse.steps.evaluate", "evaluate")
        res = dict(evaluate(_detector(p), _weights(p)))
    res["metrics"] = Path(out) / "metrics.json"
    write_json(res["metrics"], {k: v for k, v in res.items() if k != "metrics"})
    return res


def run_export(p, out, ctx):
    export = _step_fn("picosparse.steps.export", "export")
    return export(_detector(p), _weights(p), out, input_size=p["input_size"],
                  postprocess=p["postprocess"])


def run_opt(p, out, ctx):
    optimize = _step_fn("picosparse.steps.lite", "optimize")
    return optimize(p["model_dir"], Path(out) / "model.nb", sparse=p["sparse"],
                    sparse_threshold=p["sparse_threshold"], valid_targets=p["valid_targets"],
                    fp16=p["fp16"])


def run_x86_sparse(p, out, ctx):
    from picosparse.steps import x86_sparse
    options = x86_sparse.Options(p["sparse_threshold"], p["nchw_ops"])
    return x86_sparse.convert(p["model_dir"], options, out=out)


def run_quant(p, out, ctx):
    from picosparse.steps.quant import quantize
    return quantize(_detector(p), p["model_dir"], out, calib_images=p["calib_images"],
                    algo=p["algo"], split=p["calib_split"], seed=p["seed"],
                    backend=p["backend"], quantize_depthwise=p["quantize_depthwise"])


def run_qat(p, out, ctx):
    from picosparse.steps.qat import qat
    return qat(_detector(p), _weights(p), out, epochs=p["epochs"], lr=p["lr"],
               input_size=p["input_size"], postprocess=p["postprocess"], seed=p["seed"],
               train_bn=p["train_bn"])


def run_bench(p, out, ctx):
    bench = _step_fn("picosparse.steps.bench", "bench")
    names = list(p["models"])
    res = dict(bench([p["models"][n] for n in names], threads=tuple(p["threads"]),
                     repeats=p["repeats"], warmup=p["warmup"], runtime=p["runtime"]))
    # bench keeps the order it was given; key its rows by the pipeline's variant names
    res["models"] = {n: {**m, "name": n} for n, m in zip(names, res["models"])}
    res["results"] = Path(out) / "bench.json"
    write_json(res["results"], {k: v for k, v in res.items() if k != "results"})
    return res


def run_report(p, out, ctx):
    from picosparse.steps.report import write_report
    return write_report(out, variants=p["variants"], bench=p["bench"], baseline=p["baseline"],
                        title=p["title"] or ctx.pipeline)


REGISTRY = {
    "data": run_data,
    "train": run_train,
    "prune": run_prune,
    "eval": run_eval,
    "export": run_export,
    "opt": run_opt,
    "quant": run_quant,
    "qat": run_qat,
    "x86_sparse": run_x86_sparse,
    "bench": run_bench,
    "report": run_report,
}
