"""Detector configs in PaddleDetection's YAML format (with `_BASE_`), plus our pruning section.

Precedence, decided here and only here: file (+ its `_BASE_` chain) < `--slim-config` file
< `-o key=value` overrides < explicit flags (e.g. `--sparsity`). The pruning section keeps
PaddleDetection's own `UnstructuredPruner` keys so a user's slim file works unchanged; our
additions (`skip`, `local_sparsity`) sit beside them and are validated like the rest.
"""

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from picosparse import yamlio
from picosparse.errors import ConfigError
from picosparse.yamlio import Tagged, TaggedList

BASE_KEY = "_BASE_"
PRUNE_KEY = "UnstructuredPruner"

# key -> (types, check, description of a valid value)
_INT = (int,)
_NUM = (int, float)


def is_block(v):
    """`sparse_block`: a list of two integers >= 1 ([m output channels, n input channels])."""
    return (isinstance(v, (list, tuple)) and len(v) == 2
            and all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in v))


PRUNE_SCHEMA = {
    "stable_epochs": (_INT, lambda v: v >= 0, "an integer >= 0"),
    "pruning_epochs": (_INT, lambda v: v >= 0, "an integer >= 0"),
    "tunning_epochs": (_INT, lambda v: v >= 0, "an integer >= 0"),
    "pruning_steps": (_INT, lambda v: v >= 1, "an integer >= 1"),
    "ratio": (_NUM, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "initial_ratio": (_NUM, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "prune_params_type": ((str, type(None)), lambda v: v in (None, "conv1x1_only"),
                          "'conv1x1_only' or null (all conv/linear weights)"),
    "local_sparsity": ((bool,), lambda v: True, "true or false"),
    "sparse_block": ((list,), is_block, "[m, n], two integers >= 1 (a block of m output x n "
                     "input channels zeroed or kept whole; [1, 1] = unstructured)"),
    "skip": ((list,), lambda v: True, "a list of skip rules"),
    "recipe": ((str,), lambda v: True, "a note saying where the recipe came from"),
}
PRUNE_REQUIRED = ("pruning_epochs", "pruning_steps", "ratio")
SKIP_RULE_KEYS = {"name", "regex", "shape", "structure", "why"}
# found from the model's structure, so one rule fits PicoDet-s/m/l, ESNet and LCNet alike
STRUCTURES = {
    "head_outputs": "the head's prediction convs (class scores + box distributions)",
    "stage_last_se": "squeeze-excite convs of the last block of each backbone stage",
}
# PaddleDetection's older pruner configs put the GMP keys at the top level
LEGACY_PRUNE_KEYS = ("stable_epochs", "pruning_epochs", "tunning_epochs", "pruning_steps",
                     "ratio", "initial_ratio", "prune_params_type")
DEFAULT_RECIPE = "built-in default (the seed's policy; schedule from the config's epoch)"


@dataclass
class SkipRule:
    """Leave a parameter dense when its structured name or shape matches."""

    name: str = None  # glob on the structured name, e.g. "head.head_cls*"
    regex: str = None
    shape: list = None  # exact shape; -1 matches any size
    structure: str = None  # one of STRUCTURES
    why: str = ""

    def describe(self):
        return (f"name~{self.name}" if self.name else
                f"regex~{self.regex}" if self.regex else
                f"structure={self.structure}" if self.structure else f"shape={self.shape}")


@dataclass
class PruneSpec:
    ratio: float
    pruning_epochs: int
    pruning_steps: int
    stable_epochs: int = 0
    tunning_epochs: int = 0
    initial_ratio: float = 0.0
    prune_params_type: str = "conv1x1_only"
    local_sparsity: bool = True
    # PaddleSlim's key: [m, n] = blocks of m output x n input channels zeroed or kept whole
    sparse_block: list = field(default_factory=lambda: [1, 1])
    skip: list = field(default_factory=list)
    recipe: str = None

    @property
    def blocked(self):
        """Whether pruning zeroes blocks (sparse_block other than [1, 1])."""
        return list(self.sparse_block) != [1, 1]

    @property
    def total_epochs(self):
        return self.stable_epochs + self.pruning_epochs + self.tunning_epochs


@dataclass
class DetectorConfig:
    """A fully merged PaddleDetection config and our validated pruning spec (None = dense)."""

    path: Path
    data: dict
    prune: PruneSpec = None
    sources: list = field(default_factory=list)

    def get(self, key, default=None):
        return self.data.get(key, default)

    def dump(self):
        """The resolved config as YAML, written next to every run's outputs."""
        return yamlio.dump(_plain(self.data))


def _plain(obj):
    if isinstance(obj, Tagged):
        return Tagged(obj.tag, {str(k): _plain(v) for k, v in obj.items()})
    if isinstance(obj, TaggedList):
        return TaggedList(obj.tag, [_plain(v) for v in obj])
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _merges_into(base, over):
    """Whether `over` is merged key by key into `base` (else it replaces it)."""
    if not (isinstance(base, dict) and isinstance(over, dict)) or isinstance(over, Tagged):
        return False
    # a plain `{name: Class, ...}` over a `!Class {...}` names its class anew: it replaces
    return not (isinstance(base, Tagged) and "name" in over)


def merge(base, over):
    """PaddleDetection's merge rule: nested dicts merge, everything else is replaced.

    A tagged value (`!COCODataSet {...}`) is a mapping of its class's arguments, so a later
    plain mapping sets some of them (`-o TrainDataset.dataset_dir=...` works on it); a later
    tagged value replaces it whole, as in PaddleDetection.
    """
    out = copy.deepcopy(base)
    for k, v in over.items():
        if _merges_into(out.get(k), v):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def read_yaml(path, what="config"):
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} file does not exist")
    try:
        # data only: PaddleDetection's `!Class` tags are kept as Tagged (detector configs only)
        data = yamlio.load(path.read_text(), tags=what == "config")
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: {yamlio.error_text(e)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def load_with_base(path, _chain=()):
    """Read a YAML file and its `_BASE_` files (later bases and the file itself win)."""
    path = Path(path).resolve()
    if path in _chain:
        raise ConfigError(f"{path}: _BASE_ cycle via {' -> '.join(p.name for p in _chain)}")
    data = read_yaml(path)
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list):
        raise ConfigError(f"{path}: _BASE_ must be a list of YAML paths")
    merged, sources = {}, []
    for b in bases:
        bp = Path(os.path.expanduser(str(b)))
        if not bp.is_absolute():
            bp = path.parent / bp
        if not bp.is_file():
            raise ConfigError(f"{path}: _BASE_ entry '{b}' does not exist ({bp})")
        base_data, base_sources = load_with_base(bp, _chain + (path,))
        merged = merge(merged, base_data)
        sources += base_sources
    return merge(merged, data), sources + [path]


def parse_override(text):
    """`A.b=value` (PaddleDetection's -o syntax) -> (key path, value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"-o {text}: expected key=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"-o {text}: empty key")
    try:
        value = yamlio.load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_override(data, text):
    """Set one `-o` override in a copy of `data`; a numeric part indexes a list."""
    path, value = parse_override(text)
    data = copy.deepcopy(data)
    node = data
    for i, part in enumerate(path[:-1]):
        if isinstance(node, list):
            node = node[_index(node, part, text)]
        else:
            if not isinstance(node.get(part), (dict, list)):
                node[part] = {}
            node = node[part]
    last = path[-1]
    if isinstance(node, list):
        node[_index(node, last, text)] = value
    elif _merges_into(node.get(last), value):
        node[last] = merge(node[last], value)
    else:
        node[last] = value
    return data


def _index(lst, part, text):
    try:
        i = int(part)
        lst[i]
        return i
    except (ValueError, IndexError):
        raise ConfigError(f"-o {text}: '{part}' is not an index of a {len(lst)}-item list") from None


def validate_prune(section, where):
    """Check the UnstructuredPruner section; `where` names the file for the message."""
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: {PRUNE_KEY} must be a mapping")
    for k in section:
        if k not in PRUNE_SCHEMA:
            known = ", ".join(sorted(PRUNE_SCHEMA))
            raise ConfigError(f"{where}: unknown key {PRUNE_KEY}.{k} (known: {known})")
    for k in PRUNE_REQUIRED:
        if k not in section:
            raise ConfigError(f"{where}: {PRUNE_KEY}.{k} is required")
    for k, v in section.items():
        types, ok, desc = PRUNE_SCHEMA[k]
        if isinstance(v, bool) and bool not in types:
            raise ConfigError(f"{where}: {PRUNE_KEY}.{k} must be {desc}, got {v!r}")
        if not isinstance(v, types) or not ok(v):
            raise ConfigError(f"{where}: {PRUNE_KEY}.{k} must be {desc}, got {v!r}")
    if "skip" not in section:
        # a stock slim file says nothing: apply the seed's policy (`skip: []` prunes all)
        section["skip"] = [{"structure": k, "why": v} for k, v in STRUCTURES.items()]
    spec = PruneSpec(**{k: v for k, v in section.items() if k != "skip"})
    if spec.initial_ratio > spec.ratio:
        raise ConfigError(f"{where}: {PRUNE_KEY}.initial_ratio ({spec.initial_ratio}) "
                          f"is above ratio ({spec.ratio})")
    spec.skip = [_skip_rule(r, i, where) for i, r in enumerate(section.get("skip") or [])]
    return spec


def _skip_rule(rule, i, where):
    key = f"{PRUNE_KEY}.skip[{i}]"
    if not isinstance(rule, dict):
        raise ConfigError(f"{where}: {key} must be a mapping with name, regex or shape")
    unknown = set(rule) - SKIP_RULE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key {key}.{sorted(unknown)[0]} "
                          f"(known: {', '.join(sorted(SKIP_RULE_KEYS))})")
    given = [k for k in ("name", "regex", "shape", "structure") if k in rule]
    if len(given) != 1:
        raise ConfigError(f"{where}: {key} needs exactly one of name, regex, shape, structure")
    if "structure" in rule and rule["structure"] not in STRUCTURES:
        raise ConfigError(f"{where}: {key}.structure must be one of "
                          f"{', '.join(STRUCTURES)}, got {rule['structure']!r}")
    if "shape" in rule and not (isinstance(rule["shape"], list)
                                and all(isinstance(d, int) for d in rule["shape"])):
        raise ConfigError(f"{where}: {key}.shape must be a list of integers (-1 = any)")
    if "regex" in rule:
        import re
        try:
            re.compile(rule["regex"])
        except re.error as e:
            raise ConfigError(f"{where}: {key}.regex is not a valid regex: {e}") from None
    if "name" in rule and not isinstance(rule["name"], str):
        raise ConfigError(f"{where}: {key}.name must be a string glob")
    return SkipRule(**rule)


def _check_training_keys(data, where):
    for k in ("epoch", "snapshot_epoch", "log_iter"):
        v = data.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise ConfigError(f"{where}: {k} must be an integer >= 0, got {v!r}")
    if "architecture" not in data:
        raise ConfigError(f"{where}: no 'architecture' key (is this a PaddleDetection "
                          "detector config?)")


def default_recipe(data, ratio, block=None):
    """The UnstructuredPruner section `--sparsity R` uses when no recipe is given.

    The seed's policy (1x1 convs only, local sparsity, head outputs and each stage's last
    squeeze-excite block dense) and its schedule scaled to the config's `epoch`: no stable
    phase, half the epochs pruning, half tuning, two ratio steps per pruning epoch, starting at
    0.15 (0.20 above 75%), as the seed's 300-epoch recipe does. `block`: its sparse_block
    ([1, 1], unstructured, when None).
    """
    epochs = data.get("epoch")
    epochs = epochs if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0 \
        else 1
    pruning = max(1, epochs // 2)
    return {
        "recipe": DEFAULT_RECIPE,
        "stable_epochs": 0,
        "pruning_epochs": pruning,
        "tunning_epochs": max(0, epochs - pruning),
        "pruning_steps": 2 * pruning,
        "ratio": float(ratio),
        "initial_ratio": min(0.15 if ratio <= 0.75 else 0.20, float(ratio)),
        "prune_params_type": "conv1x1_only",
        "local_sparsity": True,
        "sparse_block": list(block) if block is not None else [1, 1],
        "skip": [{"structure": k, "why": v} for k, v in STRUCTURES.items()],
    }


def _legacy_section(data):
    """PaddleDetection's older pruner configs: `unstructured_prune: true` and the GMP keys at
    the top level (its trainer applies no skip list there; ours applies the seed's)."""
    if PRUNE_KEY in data or not data.get("unstructured_prune"):
        return
    section = {k: data[k] for k in LEGACY_PRUNE_KEYS if k in data}
    if "ratio" in section:
        section["recipe"] = "top-level unstructured_prune keys of the config"
        data[PRUNE_KEY] = section
        data.setdefault("slim", PRUNE_KEY)


def load_detector(path, overrides=(), slim_config=None, sparsity=None, sparse_block=None):
    """Resolve a detector config: file < slim file < -o overrides < --sparsity and
    --sparse-block ([m, n]: the recipe's sparse_block, built-in or from a file)."""
    path = Path(path)
    data, sources = load_with_base(path)
    where = str(path)
    if slim_config:
        slim, slim_sources = load_with_base(slim_config)
        data = merge(data, slim)
        sources += slim_sources
        where = str(slim_config) if PRUNE_KEY in slim else where
    for o in overrides:
        data = apply_override(data, o)
        if o.split("=", 1)[0].split(".")[0] == PRUNE_KEY:
            where = f"-o {o}"
    _legacy_section(data)
    _check_training_keys(data, str(path))
    if sparsity is not None:
        if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) \
                or not 0 <= sparsity < 1:
            raise ConfigError(f"--sparsity must be in [0, 1), got {sparsity}")
        if sparsity > 0 and PRUNE_KEY not in data:
            data[PRUNE_KEY] = default_recipe(data, sparsity)
            data["slim"] = PRUNE_KEY
            where = "--sparsity (built-in default recipe)"
    if sparse_block is not None:
        label = "x".join(map(str, sparse_block)) if is_block(sparse_block) else sparse_block
        if not is_block(sparse_block):
            raise ConfigError(f"--sparse-block {label}: must be MxN, two integers >= 1 "
                              "(e.g. 1x2)")
        if PRUNE_KEY in data and isinstance(data[PRUNE_KEY], dict):
            data[PRUNE_KEY]["sparse_block"] = list(sparse_block)
        elif sparsity != 0:
            raise ConfigError(f"--sparse-block {label}: needs pruning (--sparsity, or a recipe "
                              "with --slim-config)")
    prune = None
    if PRUNE_KEY in data:
        prune = validate_prune(data[PRUNE_KEY], where)
    if sparsity is not None:
        if sparsity == 0:
            prune = None
        else:
            # the written config.yml must say what runs: ratio and a lowered initial_ratio
            prune.ratio = float(sparsity)
            prune.initial_ratio = min(prune.initial_ratio, prune.ratio)
            data[PRUNE_KEY]["ratio"] = prune.ratio
            data[PRUNE_KEY]["initial_ratio"] = prune.initial_ratio
    if prune is None:
        data.pop(PRUNE_KEY, None)
        data.pop("slim", None)
    elif prune.ratio == 0:
        prune = None
    return DetectorConfig(path=path, data=data, prune=prune, sources=sources)
