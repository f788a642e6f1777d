"""One frozen dataclass per step holds its parameters; the rest is derived from it.

    @dataclass(frozen=True)
    class OptParams:
        sparse: bool = param(True, "bool", flag="--sparse/--no-sparse", help="...")
        sparse_threshold: float = param(SPARSE_THRESHOLD, "number", check=between(0, 1, low=False))

        def __post_init__(self):
            check(self)                    # each field's `check`: a ParamError naming it

    @params.options(OptParams)             # cli.py: the click options
    schema_of(OptParams)                   # pipeline/schema.py: {name: P(type, default, choices)}
    from_cli(OptParams, kwargs)            # an instance from click's keyword arguments
    from_mapping(OptParams, step_params)   # ... or from a pipeline step's resolved mapping

Types are the pipeline's (pipeline/schema.P): str, path, config, source, int, number, bool,
list[str], list[int], ...; a trailing '?' allows null. The defaults live in the dataclass only.
A ParamError names the field; the CLI shows it as the flag, the pipeline as the key path.
"""

import dataclasses
import os

from picosparse.errors import ParamError

KEY = "picosparse.param"
REQUIRED = dataclasses.MISSING


@dataclasses.dataclass(frozen=True)
class Spec:
    type: str
    help: str = ""
    choices: tuple = None
    flag: str = None  # click's spelling: "--x", "--x/--no-x", "-c/--config" [--field-name]
    metavar: str = None
    multiple: bool = False
    only: str = None  # "cli" or "pipeline": the field exists on that side only
    check: object = None  # value -> None, or the reason it is wrong ("must be ...")
    parse: object = None  # CLI value -> field value (e.g. "on"/"off" -> bool)
    click: dict = None  # click.option arguments that differ (default, ...); path="file"/"dir"
    pipeline: dict = None  # schema.P values that differ from the dataclass's (type, default)


def param(default=REQUIRED, type="str", *, help="", choices=None, flag=None, metavar=None,
          multiple=False, only=None, check=None, parse=None, click=None, pipeline=None):
    """A dataclass field carrying its Spec (see the module docstring)."""
    assert only in (None, "cli", "pipeline"), only
    spec = Spec(type, help, tuple(choices) if choices else None, flag, metavar, multiple, only,
                check, parse, click, pipeline)
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type_copy(value), metadata={KEY: spec})
    return dataclasses.field(default=default, metadata={KEY: spec})


def type_copy(v):
    return list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v


def specs(cls, side=None):
    """[(dataclass field, Spec)] of `cls`, those visible on `side` ("cli"/"pipeline") only."""
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(KEY)
        if spec is not None and (side is None or spec.only in (None, side)):
            out.append((f, spec))
    return out


def default_of(cls, name):
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return REQUIRED


# ---------------------------------------------------------------- spelling

def flag_of(cls, name):
    """How the CLI spells field `name` of `cls` (the option's first long name)."""
    spec = dict((f.name, s) for f, s in specs(cls)).get(name) if cls else None
    if spec is None or not spec.flag:
        return "--" + name.replace("_", "-")
    longs = [d for d in spec.flag.split("/") if d.startswith("--")]
    return longs[0] if longs else spec.flag.split("/")[0]


def is_flag(spec):
    return spec.type == "bool" and "/" not in (spec.flag or "") and spec.parse is None


def shown(cls, name):
    """Whether the CLI message shows the value after the flag (not for on/off flags)."""
    spec = dict((f.name, s) for f, s in specs(cls)).get(name) if cls else None
    return not (spec is not None and spec.type.rstrip("?") == "bool" and spec.parse is None)


# ---------------------------------------------------------------- checks

def check(obj):
    """Run every field's `check` on `obj` (a params dataclass): a ParamError for the first
    wrong one. Types are checked too, so a pipeline's `sparse_threshold: "x"` reads as such."""
    cls = type(obj)
    for f, spec in specs(cls):
        v = getattr(obj, f.name)
        reason = reason_for(spec, v)
        if reason:
            raise ParamError(f.name, reason, v, owner=cls)


_TYPES = {"int": (int,), "number": (int, float), "bool": (bool,), "str": (str,),
          "path": (str,), "config": (str,), "source": (str,), "model": (str,)}


def reason_for(spec, v):
    """Why `v` is not a valid value of `spec` (None when it is)."""
    t = spec.type.rstrip("?")
    if v is None:
        return None if spec.type.endswith("?") else "must be given"
    types = _TYPES.get(t)
    if types is not None:
        if t in ("path", "config", "source", "model"):
            types = types + (os.PathLike,)
        if (isinstance(v, bool) and bool not in types) or not isinstance(v, types):
            return f"must be {_NAMES.get(t, t)}"
    if spec.choices and v not in spec.choices:
        return f"must be one of {', '.join(map(str, spec.choices))}"
    if spec.check is not None:
        return spec.check(v)
    return None


_NAMES = {"int": "an integer", "number": "a number", "bool": "true or false", "str": "a string",
          "path": "a path", "config": "a config path", "source": "a path or URL",
          "model": "a model path (DIR or DIR@bf16)"}


def between(lo, hi, low=True, high=True):
    """A check: lo <= v <= hi (`low`/`high` False: that end open)."""
    text = f"{'[' if low else '('}{lo:g}, {hi:g}{']' if high else ')'}"

    def chk(v):
        ok = (v >= lo if low else v > lo) and (v <= hi if high else v < hi)
        return None if ok else f"must be in {text}"
    return chk


def at_least(n):
    def chk(v):
        return None if v >= n else f"must be >= {n}"
    return chk


def positive(v):
    return None if v > 0 else "must be a positive number"


def multiple_of_32(v):
    return None if v > 0 and v % 32 == 0 else \
        "must be a positive multiple of 32 (PicoDet's largest FPN stride)"


def device_param(**kw):
    """--device of the commands that run Paddle (picosparse.device.select reads it)."""
    return param("auto", "str", choices=("auto", "cpu", "gpu"), only="cli", help=(
        "Where to run. auto: the config's use_gpu when this Paddle build has CUDA and a GPU "
        "is visible, else the CPU; the choice and why are printed."), **kw)


SPARSE_BLOCK_HELP = (
    "Prune in blocks of M output x N input channels, zeroed or kept whole (the recipe's "
    "sparse_block; overrides a --slim-config file's). Pairs of input channels (1x2) let the "
    "x86 BF16 sparse kernel pair weights; costs some accuracy versus unstructured (1x1, "
    "the default).")


def parse_block(text):
    """--sparse-block "1x2" -> [1, 2] (None stays None)."""
    if text is None:
        return None
    parts = str(text).strip().lower().split("x")
    try:
        block = [int(p) for p in parts]
    except ValueError:
        block = None
    if block is None or len(block) != 2 or min(block) < 1:
        raise ParamError("sparse_block", "must be MxN, two integers >= 1 (e.g. 1x2)", text)
    return block


def check_block(v):
    from picosparse.config import is_block  # the recipe key's own rule
    return None if is_block(v) else "must be [m, n], two integers >= 1 (e.g. [1, 2])"


def sparse_block_param(**kw):
    """--sparse-block MxN / a pipeline step's `sparse_block: [m, n]` (train, prune): the
    recipe's sparse_block (config.load_detector applies it)."""
    return param(None, "list[int]?", flag="--sparse-block", metavar="MxN", parse=parse_block,
                 check=check_block, help=SPARSE_BLOCK_HELP, **kw)


# ---------------------------------------------------------------- derivations

def schema_of(cls):
    """{field: schema.P(type, default, choices)} of the pipeline-visible fields."""
    from picosparse.pipeline.schema import P, REQUIRED as P_REQUIRED
    out = {}
    for f, spec in specs(cls, "pipeline"):
        d = default_of(cls, f.name)
        kw = {"type": spec.type, "default": P_REQUIRED if d is REQUIRED else d,
              "choices": spec.choices, **(spec.pipeline or {})}
        out[f.name] = P(**kw)
    return out


def options(cls, *names, prefix=""):
    """A decorator adding the click options of `cls`'s CLI-visible fields (only `names` when
    given), in field order, to a command; from_cli turns their values back into a `cls`.
    `prefix` starts each help text (e.g. "With --int8: ")."""
    import click
    chosen = [(f, s) for f, s in specs(cls, "cli") if not names or f.name in names]

    def deco(fn):
        for f, spec in reversed(chosen):  # click lists options in decorator order
            kw = {"help": prefix + spec.help}
            d = default_of(cls, f.name)
            t = spec.type.rstrip("?")
            if d is REQUIRED:
                kw["required"] = True
            if is_flag(spec):
                kw.update(is_flag=True, default=bool(d))
                if d is True:  # spelled as the negative flag, e.g. --no-postprocess
                    kw["flag_value"] = False
            else:
                if d is not REQUIRED:
                    kw.update(default=d, show_default=d is not None and d != [])
                if spec.choices:  # checked by the dataclass: a one-line error naming the flag
                    kw["metavar"] = "[" + "|".join(map(str, spec.choices)) + "]"
                elif t in ("int", "number") and not spec.multiple:
                    kw["type"] = int if t == "int" else float
                if spec.multiple:
                    kw.update(multiple=True, show_default=False,
                              default=tuple(d) if d not in (REQUIRED, None) else ())
            if spec.metavar:
                kw["metavar"] = spec.metavar
            extra = dict(spec.click or {})
            if "choices" in extra:  # a CLI-only spelling, e.g. on/off for a bool
                kw["type"] = click.Choice(list(extra.pop("choices")))
            if "path" in extra:
                what = extra.pop("path")
                kw["type"] = click.Path(dir_okay=what != "file", file_okay=what != "dir")
            kw.update(extra)
            flag = spec.flag or "--" + f.name.replace("_", "-")
            fn = click.option(*_decls(flag), f.name, **kw)(fn)
        return fn
    return deco


def _decls(flag):
    """'-c/--config' -> ['-c', '--config']; '--sparse/--no-sparse' stays one declaration."""
    parts = flag.split("/")
    if len(parts) == 2 and parts[0].startswith("--") and parts[1].startswith("--"):
        return [flag]
    return parts


def from_cli(cls, kwargs, **extra):
    """A `cls` from click's keyword arguments: its CLI fields are popped from `kwargs` (what is
    left are the command's other arguments); `extra` sets fields the command computes."""
    values = {}
    for f, spec in specs(cls, "cli"):
        if f.name in kwargs:
            v = kwargs.pop(f.name)
            if spec.multiple and v is not None:
                v = list(v)
            values[f.name] = spec.parse(v) if spec.parse else v
    values.update(extra)
    return cls(**values)


def from_mapping(cls, mapping, **extra):
    """A `cls` from a pipeline step's resolved parameters (other keys are ignored)."""
    values = {f.name: mapping[f.name] for f, _ in specs(cls, "pipeline") if f.name in mapping}
    values.update(extra)
    return cls(**values)
