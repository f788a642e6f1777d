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
                         slim_config=p.get("slim_config"), sparsity=p.get("sparsity"),
                         sparse_block=p.get("sparse_block"))


def _weights(p):
    """Local weights for a path or URL (published weights are downloaded once, cached)."""
    from picosparse.weights import resolve
    return resolve(p["weights"], flag="weights")


def _params(module, cls, p, **extra):
    """The step's parameter dataclass from its resolved mapping (checked when made)."""
    from picosparse.params import from_mapping
    return from_mapping(getattr(importlib.import_module(module), cls), p, **extra)


def run_data(p, out, ctx):
    synthesize = _step_fn("picosparse.data.synth", "synthesize")
    return synthesize(out, _params("picosparse.data.synth", "DataParams", p))


def run_train(p, out, ctx):
    train = _step_fn("picosparse.steps.train", "train")
    params = _params("picosparse.steps.train", "TrainParams", p, resume=ctx.resume)
    return train(_detector(p), out, params)


def run_prune(p, out, ctx):
    oneshot = _step_fn("picosparse.steps.prune", "oneshot")
    cfg = _detector(p)
    res = dict(oneshot(cfg, _weights(p), Path(out) / "model.pdparams"))
    # downstream eval/export need the config that goes with these weights, like train's
    res["config"] = Path(out) / "config.yml"
    write_text(res["config"], cfg.dump())
    return res


def run_eval(p, out, ctx):
    weights = _weights(p) if p.get("weights") is not None else None
    params = _params("picosparse.steps.evaluate", "EvalParams", p, weights=weights)
    run = _step_fn("picosparse.steps.evaluate", "run")
    res = dict(run(_detector(p), params))
    res["metrics"] = Path(out) / "metrics.json"
    write_json(res["metrics"], {k: v for k, v in res.items() if k != "metrics"})
    return res


def run_export(p, out, ctx):
    export = _step_fn("picosparse.steps.export", "export")
    params = _params("picosparse.steps.export", "ExportParams", p)
    return export(_detector(p), _weights(p), out, params)


def run_opt(p, out, ctx):
    optimize = _step_fn("picosparse.steps.lite", "optimize")
    params = _params("picosparse.steps.lite", "OptParams", p)
    return optimize(p["model_dir"], Path(out) / "model.nb", params)


def run_x86_sparse(p, out, ctx):
    from picosparse.steps import x86_sparse
    params = _params("picosparse.steps.x86_sparse", "X86SparseParams", p)
    return x86_sparse.convert(p["model_dir"], params, out=out)


def run_quant(p, out, ctx):
    from picosparse.steps.quant import quantize
    params = _params("picosparse.steps.quant", "QuantParams", p)
    return quantize(_detector(p), p["model_dir"], out, params)


def run_qat(p, out, ctx):
    from picosparse.steps.qat import qat
    params = _params("picosparse.steps.qat", "QatParams", p)
    return qat(_detector(p), _weights(p), out, params)


def run_bench(p, out, ctx):
    bench = _step_fn("picosparse.steps.bench", "bench")
    names = list(p["models"])
    params = _params("picosparse.steps.bench", "BenchParams", p)
    res = dict(bench([p["models"][n] for n in names], params, names=names))
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
