"""The one place that imports numpy, paddle, ppdet and paddleslim.

Why one place: `import paddle; import ppdet` segfaulted here unless numpy/cv2 were imported
first (STACK.md), ppdet prints warnings to stdout on import, and ppdet keeps its config in a
process-wide dict that must be reset before each model is built. Every other module gets the
stack through `stack()` and builds models through `build()`.
"""

import contextlib
import copy
import importlib.metadata
import io
import logging
import os
import warnings
from types import SimpleNamespace

from picosparse.errors import StackError

# Versions verified together (STACK.md); `picosparse env` reports drift from these.
PINNED = {
    "paddlepaddle": "2.6.2",
    "paddleslim": "2.6.0",
    "paddledet": "2.6.0",
    "paddlelite": "2.13rc0",
}

_STACK = None
_PRISTINE = None
_DEFAULTS = []


def _snapshot_defaults(global_config):
    """Remember registered classes' __init__ defaults: some ppdet modules mutate a mutable
    default (CSPPAN appends to its `spatial_scales=[...]`), so a second build in one process
    would get a different model unless the defaults are put back first."""
    for v in global_config.values():
        mod = getattr(v, "pymodule", None)
        cls = getattr(mod, getattr(v, "name", ""), None) if mod else None
        fn = getattr(getattr(cls, "__init__", None), "__func__", getattr(cls, "__init__", None))
        if getattr(fn, "__defaults__", None):
            _DEFAULTS.append((fn, copy.deepcopy(fn.__defaults__)))


def version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _quiet_env():
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("FLAGS_call_stack_level", "0")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="paddle")


def stack():
    """Import the stack once, in the order that works, and return it as a namespace."""
    global _STACK, _PRISTINE
    if _STACK is not None:
        return _STACK
    _quiet_env()
    try:
        import numpy  # noqa: F401  (must precede paddle: see module docstring)
        import cv2  # noqa: F401
    except ImportError as e:
        raise StackError(f"numpy/opencv not importable ({e}); run `make install`") from None
    if int(numpy.__version__.split(".")[0]) >= 2:
        raise StackError(f"numpy {numpy.__version__} installed; PaddleSlim 2.6 needs numpy<2 "
                         "(np.product); run `make install`")
    try:
        import paddle
        # ppdet prints metric warnings to stdout on import; keep CLI output clean
        with contextlib.redirect_stdout(io.StringIO()):
            import ppdet  # noqa: F401
            from ppdet.core import workspace
            import ppdet.modeling  # noqa: F401  registers the architectures
            import ppdet.data  # noqa: F401
            import ppdet.optimizer  # noqa: F401
            import ppdet.slim  # noqa: F401
        import paddleslim  # noqa: F401
        from paddleslim import GMPUnstructuredPruner, UnstructuredPruner
    except ImportError as e:
        raise StackError(f"the Paddle stack is not importable ({e}); run `make install`") from None
    for name in ("ppdet", "paddle", "paddleslim", "PaddleSlim"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from picosparse import device  # CPU unless a command chose a device (--device)
    paddle.set_device(device.current_place())
    # registered modules are dicts holding their schema; remember their own items only
    _PRISTINE = {k: (v, copy.deepcopy(dict(v))) for k, v in workspace.global_config.items()}
    _snapshot_defaults(workspace.global_config)
    _STACK = SimpleNamespace(
        np=numpy, cv2=cv2, paddle=paddle, ppdet=ppdet, workspace=workspace,
        GMPUnstructuredPruner=GMPUnstructuredPruner, UnstructuredPruner=UnstructuredPruner,
    )
    return _STACK


def activate(cfg_dict):
    """Make `cfg_dict` ppdet's global config, dropping whatever an earlier config left."""
    s = stack()
    g = s.workspace.global_config
    g.clear()
    for fn, defaults in _DEFAULTS:
        fn.__defaults__ = copy.deepcopy(defaults)
    for k, (module, items) in _PRISTINE.items():
        module.clear()
        module.update(copy.deepcopy(items))
        g[k] = module
    s.workspace.merge_config(_instantiate(copy.deepcopy(cfg_dict), "", _tag_classes()))
    return g


def _tag_classes():
    """{name: class} of the ppdet classes a config may name by tag (`!COCODataSet`).

    Exactly the classes ppdet marks `@serializable` (they register a YAML representer), less
    `Callable`, which calls any function it names.
    """
    import yaml
    return {c.__name__: c for c in yaml.Dumper.yaml_representers
            if isinstance(c, type) and c.__module__.startswith("ppdet.")
            and c.__name__ != "Callable"}


def _instantiate(obj, where, classes):
    """Turn the config's Tagged values into the ppdet objects ppdet's own loader would build."""
    from picosparse.errors import ConfigError
    from picosparse.yamlio import Tagged, TaggedList
    if isinstance(obj, (Tagged, TaggedList)):
        cls = classes.get(obj.tag)
        if cls is None:
            raise ConfigError(f"{where or 'config'}: unknown tag !{obj.tag} (not a "
                              "PaddleDetection class a config can name)")
        try:
            if isinstance(obj, Tagged):
                return cls(**{k: _instantiate(v, f"{where}.{k}", classes) for k, v in obj.items()})
            return cls(*[_instantiate(v, f"{where}[{i}]", classes) for i, v in enumerate(obj)])
        except Exception as e:  # the class's own argument checks
            raise ConfigError(f"{where}: !{obj.tag}: {' '.join(str(e).split())}") from None
    if isinstance(obj, dict):
        return {k: _instantiate(v, f"{where}.{k}" if where else str(k), classes)
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_instantiate(v, f"{where}[{i}]", classes) for i, v in enumerate(obj)]
    return obj


def create(name, *args, **kwargs):
    """ppdet's `create` on the active config."""
    return stack().workspace.create(name, *args, **kwargs)


def build_model(cfg):
    """A fresh detector (paddle.nn.Layer) from a resolved DetectorConfig.

    Built in a fresh name scope so parameter names (`conv2d_17.w_0`, which optimizer states
    are keyed by) are the same in every process: a resumed run finds its optimizer state.
    """
    g = activate(cfg.data)
    with contextlib.redirect_stdout(io.StringIO()), stack().paddle.utils.unique_name.guard():
        return create(g["architecture"])


def find_opt():
    """Path of paddle_lite_opt: next to this interpreter first (the venv), then PATH."""
    import shutil
    import sys
    from pathlib import Path
    here = Path(sys.executable).parent / "paddle_lite_opt"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("paddle_lite_opt")
    if not found:
        raise StackError("paddle_lite_opt not found next to Python or on PATH; "
                         "install paddlelite==2.13rc0 (`make install`)")
    return found


# ---------------------------------------------------------------- parts of the stack, lazily
# Modules outside this file reach these through functions, so that importing them (deploy/,
# the pipeline's validation) never imports paddle.

def paddle_inference():
    """paddle.inference (Paddle Inference's Config / create_predictor)."""
    stack()
    from paddle import inference
    return inference


def framework_pb2():
    """paddle's ProgramDesc protobuf module (reads .pdmodel files)."""
    stack()
    from paddle.base.proto import framework_pb2 as pb2
    return pb2


def quant_pass_classes():
    """(IrGraph, AddQuantDequantForInferencePass): the classes quant.py speeds up."""
    stack()
    from paddle.base.framework import IrGraph
    from paddle.static.quantization.quantization_pass import AddQuantDequantForInferencePass
    return IrGraph, AddQuantDequantForInferencePass


def paddleslim_quant_post_static():
    """PaddleSlim's post-training quantization function."""
    stack()
    from paddleslim.quant import quant_post_static
    return quant_post_static


def paddleslim_qat():
    """PaddleSlim's dygraph QAT class."""
    stack()
    from paddleslim import QAT
    return QAT


def paddlelite():
    """paddlelite.lite (Paddle-Lite's Python predictor); a StackError when not installed."""
    try:
        import paddlelite.lite as lite
    except ImportError as e:
        raise StackError(f"paddlelite is not importable ({e}); `make install`") from None
    return lite
