"""Tiny stand-ins for the heavy step functions (train, oneshot, evaluate, export, optimize,
bench), with the signatures and return dicts of their contracts in picosparse/steps/*.py.
The pipeline's own adapters stay real (wrapped only to count calls per step and to inject
failures), and so do the data and report steps. The fakes write small files whose bytes depend
on what they read, so caching by content is exercised for real.
"""

import hashlib
import json
from collections import Counter
from pathlib import Path

from picosparse.errors import DataError
from picosparse.pipeline import adapters

STEP_FUNCTIONS = {  # module -> function name, as the adapters import them
    "picosparse.steps.train": "train",
    "picosparse.steps.prune": "oneshot",
    "picosparse.steps.evaluate": "evaluate",
    "picosparse.steps.export": "export",
    "picosparse.steps.lite": "optimize",
    "picosparse.steps.bench": "bench",
}


def _digest(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _sparsity(weights):
    return json.loads(Path(weights).read_text())["sparsity"]


class Fakes:
    def __init__(self):
        self.calls = Counter()  # step name -> calls
        self.resumed = {}  # train step name -> resume flag it got
        self.fail = {}  # step name -> exception raised (once) after writing a partial file
        self.checkpoint_then_fail = set()  # train folders that checkpoint, then fail (once)

    def install(self, monkeypatch):
        import importlib
        for module, name in STEP_FUNCTIONS.items():
            monkeypatch.setattr(importlib.import_module(module), name, getattr(self, name))
        for kind, adapter in list(adapters.REGISTRY.items()):
            if kind not in ("data", "report"):  # those two stay entirely real
                monkeypatch.setitem(adapters.REGISTRY, kind, self._counting(adapter))
        return self

    def _counting(self, adapter):
        def run(p, out, ctx):
            self.calls[ctx.name] += 1
            if ctx.name in self.fail:
                Path(out, "partial.txt").write_text("half-written")
                raise self.fail.pop(ctx.name)
            return adapter(p, out, ctx)
        return run

    def ran(self):
        return set(self.calls)

    def reset(self):
        self.calls.clear()
        self.resumed.clear()

    # -- the contracts ------------------------------------------------------------------

    def train(self, cfg, out, params):
        pretrained, resume, do_eval, seed = params.pretrained, params.resume, params.eval, \
            params.seed
        out = Path(out)
        self.resumed[out.name] = resume
        ck = out / "checkpoints"
        if not resume and ck.exists():
            raise DataError(f"--out {out}: holds checkpoints of an earlier run")
        (ck / "epoch_1").mkdir(parents=True, exist_ok=True)
        (ck / "epoch_1" / "state.json").write_text("{}")
        (ck / "latest").write_text("epoch_1")
        if out.name in self.checkpoint_then_fail:
            self.checkpoint_then_fail.discard(out.name)
            raise DataError("killed after the first checkpoint")
        sparsity = cfg.prune.ratio if cfg.prune else None
        pre = Path(pretrained).read_bytes() if pretrained else b""
        weights = out / "model_final.pdparams"
        weights.write_text(json.dumps({"sparsity": sparsity or 0.0,
                                       "digest": _digest(cfg.dump(), pre, seed)}))
        (out / "config.yml").write_text(cfg.dump())
        return {"weights": weights, "config": out / "config.yml", "out": out,
                "sparsity": sparsity, "best": {"mAP": 0.4} if do_eval else None, "epochs": 2,
                "iters": 10, "seconds": 0.01}

    def oneshot(self, cfg, weights, out):
        Path(out).write_text(json.dumps({"sparsity": cfg.prune.ratio,
                                         "digest": _digest(Path(weights).read_bytes())}))
        return {"weights": Path(out), "sparsity": cfg.prune.ratio, "layers": {}}

    def evaluate(self, cfg, weights):
        s = _sparsity(weights)
        wobble = int(json.loads(Path(weights).read_text())["digest"][:2], 16) / 1e5  # per model
        return {"mAP": 0.40 - 0.02 * s - wobble, "mAP50": 0.60 - 0.02 * s, "mAP75": 0.4,
                "mAP_small": 0.1, "mAP_medium": 0.4, "mAP_large": 0.5,
                "sparsity": {"overall": s,
                             "layers": {f"backbone.conv{i}.weight": s for i in range(6)}},
                "images": 3, "seconds": 0.01}

    def export(self, cfg, weights, out, params):
        out, size = Path(out), params.input_size or 160
        (out / "model.pdmodel").write_text(Path(weights).read_text())
        (out / "model.pdiparams").write_text("params")
        (out / "infer_cfg.yml").write_text(f"size: {size}\n")
        return {"model_dir": out, "model_file": out / "model.pdmodel",
                "params_file": out / "model.pdiparams", "infer_cfg": out / "infer_cfg.yml",
                "input_size": size}

    def optimize(self, model_dir, out, params):
        sparse, valid_targets = params.sparse, params.valid_targets
        s = _sparsity(Path(model_dir, "model.pdmodel"))
        Path(out).write_bytes(b"x" * int(1000 * (1 - s / 2)))
        return {"nb": Path(out), "size_bytes": Path(out).stat().st_size,
                "sparse_conv2d": 10 if sparse else 0, "conv1x1": 12,
                "valid_targets": valid_targets, "sparse": sparse, "precision": "fp32",
                "conv_precisions": {"fp32": 12}}

    def bench(self, models, params=None, names=None):
        from picosparse.deploy.runtimes import reported, split_precision
        from picosparse.steps.bench import BenchParams
        params = params or BenchParams()
        threads, runtime = params.threads, params.runtime
        rows = []
        for model in models:
            path, precision, _ = split_precision(model)
            s = _sparsity(Path(path, "model.pdmodel"))
            rows.append({"name": Path(path).name, "path": str(path), "size_bytes": 1,
                         "precision": reported(precision),
                         "latency_ms": {str(t): {"median": 40.0 * (1 - s / 3) / t, "p90": 1.0,
                                                 "mean": 1.0} for t in threads},
                         "speedup_fps_gain": {}, "speedup_ratio": {}})
        return {"runtime": runtime, "precision": "fp32", "threads": list(threads),
                "notes": ["fake bench"], "models": rows}
