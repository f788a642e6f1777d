"""Pipeline files: the YAML schema, `${...}` references, validation with one-line errors.

    # picosparse run pipelines/x.yml --out runs/x
    name: x                          # default: the file's stem; default run dir runs/<name>
    vars:                            # plain values; -o vars.NAME=VALUE replaces one
      config: configs/demo/picodet_demo.yml
    steps:                           # named steps; order and dependencies come from references
      data: {kind: data, num_train: 400}
      dense:
        kind: train
        config: ${config}            # a var, substituted when the file is loaded
        overrides: [TrainDataset.dataset_dir=${steps.data.out}]
        from_scratch: true
      eval_dense:
        kind: eval
        config: ${steps.dense.config}     # an output of step `dense`: makes it a dependency
        weights: ${steps.dense.weights}

`${steps.STEP}` alone is all of STEP's outputs as a mapping (the report consumes those).
A reference that is the whole value keeps its type; inside a longer string it becomes text.
Relative paths are relative to the current directory, as for every other picosparse command.
The step kinds, their parameters (with defaults) and outputs are `KINDS` below.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

from picosparse.errors import ConfigError

REQUIRED = object()
MISSING = object()  # a reference `substitute` leaves as it is
REF = re.compile(r"\$\{([^}]*)\}")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
RESERVED = {"plots"}  # run-dir entries the engine or the report own
TOP_KEYS = {"name", "description", "vars", "steps"}


@dataclass(frozen=True)
class P:
    """One step parameter. Types: str, path (local file/dir, hashed), config (a detector YAML,
    hashed with its _BASE_ chain), source (local path or URL), int, number, bool, list[str],
    list[int], map[path], outputs (`${steps.X}`), variants; a trailing '?' allows null."""

    type: str
    default: object = REQUIRED
    choices: tuple = None


class Params(dict):
    """A kind's parameters, with groups of which exactly one must be given (not null), and the
    step's parameter dataclass (picosparse.params) that checks their values."""

    def __init__(self, params, one_of=(), cls=None):
        super().__init__(params)
        self.one_of = tuple(one_of)
        self.cls = cls


@dataclass(frozen=True)
class Kind:
    params: dict
    outputs: dict  # name -> type; "path" outputs must still exist for a step to count as cached
    where: str = "atomic"  # atomic: temp dir renamed onto RUN/<step>; in_place: RUN/<step>
                           # (train: keeps checkpoints to resume); run_dir: RUN itself (report)
    help: str = ""


_DETECTOR = {
    "config": P("config"),
    "overrides": P("list[str]", []),
}
_SLIM = {
    "slim_config": P("config?", None),
    "sparsity": P("number?", None),
}


def _params(cls, inputs=None):
    """A step's parameters: its `inputs` (artifacts: config, weights, model_dir) and those of
    its dataclass (picosparse.params)."""
    from picosparse.params import schema_of
    return Params({**(inputs or {}), **schema_of(cls)}, getattr(cls, "ONE_OF", ()), cls)


def _kinds():
    # the step modules import no Paddle at import time: validation stays light
    from picosparse.data.synth import DataParams
    from picosparse.steps.evaluate import EvalParams
    from picosparse.steps.export import ExportParams
    from picosparse.steps.lite import OptParams
    from picosparse.steps.qat import QatParams
    from picosparse.steps.quant import QuantParams
    from picosparse.steps.prune import PruneParams
    from picosparse.steps.train import TrainParams
    from picosparse.steps.x86_sparse import X86SparseParams
    from picosparse.steps.bench import BenchParams
    return {
        "data": Kind(
            _params(DataParams),
            {"out": "path", "train_json": "path", "val_json": "path", "train_dir": "path",
             "val_dir": "path"},
            help="generated COCO dataset of shapes (picosparse data synth)"),
        "train": Kind(
            _params(TrainParams, {**_DETECTOR, **_SLIM}),
            {"weights": "path", "config": "path", "out": "path", "sparsity": "number?",
             "best": "any", "epochs": "int", "iters": "int", "seconds": "number"},
            where="in_place", help="dense or GMP training (picosparse train)"),
        "prune": Kind(
            _params(PruneParams, {**_DETECTOR, **_SLIM, "weights": P("source")}),
            {"weights": "path", "config": "path", "sparsity": "number", "layers": "any"},
            help="one-shot magnitude pruning (picosparse prune)"),
        "eval": Kind(
            # `model`: an exported folder (the deployed files' mAP, through the Detector)
            _params(EvalParams, _DETECTOR),
            {"metrics": "path", "mAP": "number", "mAP50": "number", "mAP75": "number",
             "mAP_small": "number", "mAP_medium": "number", "mAP_large": "number",
             "sparsity": "any", "images": "int", "seconds": "number"},
            help="COCO mAP + sparsity of weights or of an exported model (picosparse eval)"),
        "export": Kind(
            _params(ExportParams, {**_DETECTOR, "weights": P("source")}),
            {"model_dir": "path", "model_file": "path", "params_file": "path",
             "infer_cfg": "path", "input_size": "int"},
            help="inference model with a fixed input shape (picosparse export)"),
        "opt": Kind(
            _params(OptParams, {"model_dir": P("path")}),
            {"nb": "path", "size_bytes": "int", "sparse_conv2d": "int", "conv1x1": "int",
             "valid_targets": "str", "sparse": "bool", "precision": "str",
             "conv_precisions": "any"},
            help="Paddle-Lite .nb, sparse pass verified (picosparse opt)"),
        "x86_sparse": Kind(
            _params(X86SparseParams, {"model_dir": P("path")}),
            {"out_dir": "path", "model_xml": "path", "replaced": "int", "depthwise": "int",
             "dense_1x1_on_op": "int", "kept_dense_1x1": "int", "conv_1x1_total": "int",
             "sparse_threshold": "number", "sparse_weight_bytes": "int", "bin_bytes": "int"},
            help="x86-sparse OpenVINO model, picosparse's sparse 1x1 op (picosparse export "
                 "--x86-sparse)"),
        "quant": Kind(
            _params(QuantParams, {**_DETECTOR, "model_dir": P("path")}),
            {"model_dir": "path", "infer_cfg": "path", "backend": "str", "algo": "str",
             "calib_images": "int", "precision": "str", "zeros": "any",
             "conv1x1_zero_fraction": "number?", "seconds": "number"},
            help="INT8 post-training quantization, exact zeros verified (picosparse quant)"),
        "qat": Kind(
            _params(QatParams, {**_DETECTOR, "weights": P("source")}),
            {"model_dir": "path", "infer_cfg": "path", "precision": "str", "algo": "str",
             "epochs": "int", "iters": "int", "zeros": "any", "seconds": "number"},
            help="quantization-aware fine-tuning, masks kept, INT8 export (picosparse qat)"),
        "bench": Kind(
            _params(BenchParams, {"models": P("map[model]")}),
            {"results": "path", "runtime": "str", "precision": "str", "threads": "any",
             "notes": "any", "models": "any"},
            help="latency side by side in one interleaved run; `models` maps variant name -> "
                 "model (DIR@bf16: at OpenVINO's BF16), first = baseline"),
    }


KINDS = {
    **_kinds(),
    "report": Kind(
        {"title": P("str?", None), "baseline": P("str?", None), "variants": P("variants"),
         "bench": P("outputs?", None)},
        {"report_md": "path", "report_json": "path", "plots": "any"},
        where="run_dir", help="report.md/report.json/plots in the run dir"),
}
VARIANT_KEYS = {"model": P("str?", None), "eval": P("outputs"), "export": P("outputs?", None),
                "opt": P("outputs?", None), "quant": P("outputs?", None),
                "precision": P("str?", None), "input_size": P("int?", None)}


@dataclass
class Step:
    name: str
    kind: str
    params: dict  # defaults filled, vars substituted, `${steps...}` still symbolic
    deps: list = field(default_factory=list)  # referenced steps, first-seen order


@dataclass
class Pipeline:
    path: Path
    name: str
    vars: dict
    steps: dict  # name -> Step, in run (topological) order
    overrides: tuple = ()
    description: str = ""

    def resolved(self):
        """The pipeline after vars, -o and defaults (recorded in the manifest)."""
        return {"name": self.name, "vars": self.vars,
                "steps": {s.name: {"kind": s.kind, **s.params} for s in self.steps.values()}}


# ---------------------------------------------------------------- references

def parse_ref(text, where):
    """'steps.a.b' -> ('step', 'a', ('b',)); 'x' -> ('var', 'x', ())."""
    parts = text.strip().split(".")
    if parts[0] == "steps":
        if len(parts) < 2 or not all(parts[1:]):
            raise ConfigError(f"{where}: bad reference ${{{text}}} (use ${{steps.STEP.OUTPUT}})")
        return "step", parts[1], tuple(parts[2:])
    if len(parts) == 1 and NAME.match(parts[0]):
        return "var", parts[0], ()
    raise ConfigError(f"{where}: bad reference ${{{text}}} "
                      "(use ${VAR} or ${steps.STEP.OUTPUT})")


def whole_ref(value):
    """The inside of `value` when it is exactly one `${...}`, else None."""
    if isinstance(value, str):
        m = REF.fullmatch(value.strip())
        if m:
            return m.group(1)
    return None


def walk_strings(obj, fn):
    """Rebuild `obj` with `fn` applied to every string (dicts/lists walked)."""
    if isinstance(obj, dict):
        return {k: walk_strings(v, fn) for k, v in obj.items()}
    if isinstance(obj, list):
        return [walk_strings(v, fn) for v in obj]
    if isinstance(obj, str):
        return fn(obj)
    return obj


def step_refs(obj, where="pipeline"):
    """Every (step, keys, text) referenced anywhere in `obj`."""
    found = []

    def see(s):
        for m in REF.finditer(s):
            t, name, keys = parse_ref(m.group(1), where)
            if t == "step":
                found.append((name, keys, m.group(1)))
        return s
    walk_strings(obj, see)
    return found


def substitute(obj, lookup, where):
    """Replace each `${...}` by `lookup(kind, name, keys, text)` unless that is MISSING;
    a whole-string reference keeps the value's type."""
    def sub(s):
        inner = whole_ref(s)
        if inner is not None:
            v = lookup(*parse_ref(inner, where), inner)
            return s if v is MISSING else v

        def one(m):
            v = lookup(*parse_ref(m.group(1), where), m.group(1))
            if v is MISSING:
                return m.group(0)
            if isinstance(v, (dict, list)):
                raise ConfigError(f"{where}: ${{{m.group(1)}}} is a {type(v).__name__} and "
                                  "cannot be part of a longer string")
            return str(v)
        return REF.sub(one, s)
    return walk_strings(obj, sub)


def resolve_steps(obj, outputs, where):
    """Substitute `${steps...}` from `outputs` ({step: outputs dict}); unknown ones stay."""
    def lookup(kind, name, keys, text):
        if kind != "step" or name not in outputs:
            return MISSING
        v = outputs[name]
        for k in keys:
            if not isinstance(v, dict) or k not in v:
                raise ConfigError(f"{where}: ${{{text}}}: step '{name}' produced no '{k}'")
            v = v[k]
        return v
    return substitute(obj, lookup, where)


# ---------------------------------------------------------------- types

def model_path(text):
    """A bench model's path without its @PRECISION (`DIR@bf16` -> `DIR`)."""
    from picosparse.deploy.runtimes import split_precision
    return split_precision(text)[0]


_BASE_TYPE = {"str": (str,), "path": (str,), "model": (str,), "config": (str,), "source": (str,),
              "int": (int,), "number": (int, float), "bool": (bool,)}
# which output types may feed a parameter type through a whole `${steps.X.Y}` reference
_FEEDS = {"str": {"str", "path", "int", "number"}, "path": {"path"}, "model": {"path"},
          "config": {"path"},
          "source": {"path", "str"}, "int": {"int"}, "number": {"int", "number"},
          "bool": {"bool"}}


def _describe(t):
    names = {"str": "a string", "path": "a path", "model": "a model path (DIR or DIR@bf16)",
             "config": "a config path", "source": "a path or URL", "int": "an integer",
             "number": "a number", "bool": "true or false", "list[str]": "a list of strings",
             "list[int]": "a list of integers", "map[path]": "a mapping of name: path",
             "map[model]": "a mapping of name: model path (optionally PATH@bf16)",
             "outputs": "${steps.STEP} (all outputs of a step)",
             "variants": "a mapping of variant name: {eval, export, opt, quant, precision, "
                         "model, input_size}"}
    base = names.get(t.rstrip("?"), t)
    return base + (" or null" if t.endswith("?") else "")


class _Checker:
    def __init__(self, file, steps, kinds_of):
        self.file = file
        self.steps = steps  # names declared in the file
        self.kinds_of = kinds_of  # name -> kind

    def err(self, key, msg):
        raise ConfigError(f"{self.file}: {key}: {msg}")

    def ref_type(self, key, inner):
        """Type of a whole `${steps...}` reference's target (validated), or 'any'."""
        _, name, keys = parse_ref(inner, f"{self.file}: {key}")
        self.check_step_ref(key, name, keys, inner)
        if not keys:
            return "outputs"
        if len(keys) > 1:
            return "any"
        return KINDS[self.kinds_of[name]].outputs[keys[0]].rstrip("?")

    def check_step_ref(self, key, name, keys, text):
        if name not in self.steps:
            self.err(key, f"${{{text}}} names no step '{name}' "
                          f"(steps: {', '.join(self.steps)})")
        outs = KINDS[self.kinds_of[name]].outputs
        if keys and keys[0] not in outs:
            self.err(key, f"${{{text}}}: step '{name}' ({self.kinds_of[name]}) has no output "
                          f"'{keys[0]}' (outputs: {', '.join(outs)})")

    def value(self, key, v, t, choices=None):
        nullable = t.endswith("?")
        t = t.rstrip("?")
        if v is None:
            if not nullable:
                self.err(key, f"must be {_describe(t)}, got null")
            return
        inner = whole_ref(v)
        if inner is not None and inner.strip().startswith("steps."):
            rt = self.ref_type(key, inner)
            ok = (rt == "any" or (t == "outputs" and rt == "outputs")
                  or rt in _FEEDS.get(t, ()))
            if not ok:
                self.err(key, f"${{{inner}}} is {_describe(rt)}, expected {_describe(t)}")
            return
        for name, keys, text in step_refs(v, f"{self.file}: {key}"):
            self.check_step_ref(key, name, keys, text)
        if t == "model" and isinstance(v, str):  # a path, maybe with @PRECISION
            try:
                v, t = model_path(v), "path"
            except ConfigError as e:
                self.err(key, str(e).split(": ", 1)[-1])
        if t in _BASE_TYPE:
            types = _BASE_TYPE[t]
            if isinstance(v, bool) and bool not in types or not isinstance(v, types):
                self.err(key, f"must be {_describe(t)}, got {v!r}")
            if choices and v not in choices:
                self.err(key, f"must be one of {', '.join(choices)}, got {v!r}")
            if t in ("path", "config") and not REF.search(v) and not Path(v).exists():
                self.err(key, f"{v} does not exist")
            if t == "source" and "://" not in v and not REF.search(v) and not Path(v).exists():
                self.err(key, f"{v} does not exist (and is not a URL)")
        elif t.startswith("list["):
            if not isinstance(v, list):
                self.err(key, f"must be {_describe(t)}, got {v!r}")
            for i, item in enumerate(v):
                self.value(f"{key}[{i}]", item, t[5:-1])
        elif t in ("map[path]", "map[model]"):
            if not isinstance(v, dict) or not v:
                self.err(key, f"must be {_describe(t)}, got {v!r}")
            for name, item in v.items():
                self.value(f"{key}.{name}", item, "model" if t == "map[model]" else "path")
        elif t == "variants":
            if not isinstance(v, dict) or not v:
                self.err(key, f"must be {_describe(t)}, got {v!r}")
            for name, var in v.items():
                self.params(f"{key}.{name}", var, VARIANT_KEYS)
        elif t == "outputs":
            self.err(key, f"must be {_describe(t)}, got {v!r}")

    def params(self, key, given, schema):
        """Check a mapping against `schema`; return it with defaults filled in."""
        if not isinstance(given, dict):
            self.err(key, f"must be a mapping, got {given!r}")
        for k in given:
            if k not in schema:
                self.err(f"{key}.{k}", f"unknown key (known: {', '.join(schema)})")
        out = {}
        for k, spec in schema.items():
            if k not in given:
                if spec.default is REQUIRED:
                    self.err(f"{key}.{k}", "is required")
                out[k] = _copy(spec.default)
                continue
            self.value(f"{key}.{k}", given[k], spec.type, spec.choices)
            out[k] = given[k]
        for group in getattr(schema, "one_of", ()):
            set_ = [k for k in group if out.get(k) is not None]
            if len(set_) != 1:
                self.err(key, f"give exactly one of {' or '.join(group)}"
                              + (f" (got {' and '.join(set_)})" if set_ else ""))
        if getattr(schema, "cls", None) is not None:
            self.check_values(key, out, schema.cls)
        return out

    def check_values(self, key, values, cls):
        """The step dataclass's own checks (ranges, combinations) on the values written in the
        file; those that come from another step's outputs are checked when the step runs."""
        from picosparse.errors import ParamError
        from picosparse.params import from_mapping, specs
        fields = specs(cls, "pipeline")
        literal = {f.name: values[f.name] for f, _ in fields
                   if f.name in values and not step_refs(values[f.name])}
        try:
            if len(literal) == len(fields):
                from_mapping(cls, values)
            for f, spec in fields:
                v = literal.get(f.name)
                reason = spec.check(v) if spec.check and v is not None and f.name in literal \
                    else None
                if reason:
                    raise ParamError(f.name, reason, v, cls)
        except ParamError as e:
            raise ConfigError(e.render(lambda name: name, where=f"{self.file}: {key}")) \
                from None


def _copy(v):
    return list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v
