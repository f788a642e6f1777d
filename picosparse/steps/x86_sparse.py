"""x86-sparse conversion as a step: an exported model folder (`picosparse export`) -> an
OpenVINO IR whose 1x1 convs with enough zeros run picosparse's sparse op on x86 CPUs.

    params = X86SparseParams(sparse_threshold=0.75)    # checked here, once
    res = convert("runs/x/inference", params)          # -> runs/x/inference/x86_sparse

`picosparse export --x86-sparse` and the pipeline kind `x86_sparse` both call `convert`; the
work itself is picosparse/x86/convert.
"""

import shutil
from dataclasses import dataclass
from pathlib import Path

from picosparse import progress
from picosparse.errors import ParamError
from picosparse.params import between, check, param
from picosparse.sparsity import SPARSE_THRESHOLD

OUT_DIR = "x86_sparse"  # the default output folder, inside the exported model's


@dataclass(frozen=True)
class X86SparseParams:
    """The conversion's parameters; checked when made, so an instance is always valid.

    spelled: how a caller outside the CLI and the pipeline writes each parameter
      (e.g. {"sparse_threshold": "--threshold"}), for the messages of the conversion itself.
    """

    sparse_threshold: float = param(
        SPARSE_THRESHOLD, "number", check=between(0, 1), flag="--sparse-threshold",
        help="Min zero fraction for a 1x1 conv to run picosparse's sparse op.")
    nchw_ops: bool = param(
        True, "bool", parse=lambda v: v == "on",
        click=dict(choices=("on", "off"), default="on", show_default=True),
        help="Depthwise/KxK convs (+ the stem's max pool) and upsampling also on picosparse's "
             "NCHW ops, so no layout reorders surround the sparse ops (off: OpenVINO's own).")
    dense_1x1: bool = param(
        True, "bool", parse=lambda v: v == "on",
        click=dict(choices=("on", "off"), default="on", show_default=True),
        help="1x1 convs below the threshold (the recipe's kept-dense head outputs and SE "
             "convs) also on picosparse's op, with all their weights: no layout reorders "
             "around them, the head's outputs fused (off: OpenVINO's dense conv).")
    spelled: tuple = ()  # ((parameter, spelling), ...)

    def __post_init__(self):
        if isinstance(self.spelled, dict):
            object.__setattr__(self, "spelled", tuple(sorted(self.spelled.items())))
        try:
            check(self)
        except ParamError as e:
            if e.field not in dict(self.spelled):
                raise
            raise ParamError(e.field, e.reason, e.value, type(self),
                             label=self.name(e.field)) from None
        object.__setattr__(self, "sparse_threshold", float(self.sparse_threshold))

    def name(self, option):
        """How the caller wrote `option` (the pipeline's key by default)."""
        return dict(self.spelled).get(option, option)


def check_stack():
    """Fail early (before a slow Paddle export) when the conversion cannot run here: no
    OpenVINO, or an extension that does not build (built once here and cached)."""
    from picosparse.x86.build import library_path, openvino_dirs
    openvino_dirs()
    library_path()


def convert(model_dir, params=X86SparseParams(), out=None):
    """MODEL_DIR (a `picosparse export` output) -> OUT (default MODEL_DIR/x86_sparse): model.xml
    /.bin, libpicosparse_ops.so, x86_sparse.json, infer_cfg.yml. Written atomically: on any
    error OUT does not exist afterwards (the default one is removed first: a stale sparse model
    never sits beside a newer export). Returns picosparse.x86.convert.export.write_ir's dict.
    """
    if not isinstance(params, X86SparseParams):
        raise TypeError("params must be a picosparse.steps.x86_sparse.X86SparseParams")
    from picosparse.x86.convert.export import write_ir
    progress.say(f"x86-sparse: rewriting {model_dir} for OpenVINO + picosparse's sparse op")
    if out is None:
        out = Path(model_dir) / OUT_DIR
        if out.exists():
            shutil.rmtree(out)
    return write_ir(model_dir, out, params.sparse_threshold, params.nchw_ops,
                    params.name("sparse_threshold"), params.dense_1x1)
