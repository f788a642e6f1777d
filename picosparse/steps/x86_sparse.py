"""x86-sparse conversion as a step: an exported model folder (`picosparse export`) -> an
OpenVINO IR whose 1x1 convs with enough zeros run picosparse's sparse op on x86 CPUs.

    opts = Options(sparse_threshold=0.75)          # checked here, once
    res = convert("runs/x/inference", opts)        # -> runs/x/inference/x86_sparse

`picosparse export --x86-sparse` and the pipeline kind `x86_sparse` both call `convert`; the
work itself is picosparse/x86/convert.
"""

import shutil
from dataclasses import dataclass
from pathlib import Path

from picosparse import progress
from picosparse.errors import ConfigError
from picosparse.sparsity import SPARSE_THRESHOLD

OUT_DIR = "x86_sparse"  # the default output folder, inside the exported model's


@dataclass(frozen=True)
class Options:
    """The conversion's options; checked when made, so an Options is always valid.

    sparse_threshold: min zero fraction for a 1x1 conv to run sparse, in [0, 1].
    nchw_ops: also run depthwise / KxK convs (+ the stem's max pool) and nearest upsampling on
      picosparse's NCHW ops, so no layout reorders surround the sparse ops (False: OpenVINO's).
    spelled: how the caller wrote each option (e.g. {"sparse_threshold": "--sparse-threshold"}),
      for error messages; default: the names above, as a pipeline file writes them.
    """

    sparse_threshold: float = SPARSE_THRESHOLD
    nchw_ops: bool = True
    spelled: tuple = ()  # ((option, spelling), ...)

    def __post_init__(self):
        if isinstance(self.spelled, dict):
            object.__setattr__(self, "spelled", tuple(sorted(self.spelled.items())))
        t = self.sparse_threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
            raise ConfigError(f"{self.name('sparse_threshold')} {t}: must be in [0, 1]")
        object.__setattr__(self, "sparse_threshold", float(t))
        if not isinstance(self.nchw_ops, bool):
            raise ConfigError(f"{self.name('nchw_ops')} {self.nchw_ops!r}: must be true or false")

    def name(self, option):
        """How the caller wrote `option`."""
        return dict(self.spelled).get(option, option)


def check_stack():
    """Fail early (before a slow Paddle export) when the conversion cannot run here: no
    OpenVINO, or an extension that does not build (built once here and cached)."""
    from picosparse.x86.build import library_path, openvino_dirs
    openvino_dirs()
    library_path()


def convert(model_dir, options=Options(), out=None):
    """MODEL_DIR (a `picosparse export` output) -> OUT (default MODEL_DIR/x86_sparse): model.xml
    /.bin, libpicosparse_ops.so, x86_sparse.json, infer_cfg.yml. Written atomically: on any
    error OUT does not exist afterwards (the default one is removed first: a stale sparse model
    never sits beside a newer export). Returns picosparse.x86.convert.export.write_ir's dict.
    """
    if not isinstance(options, Options):
        raise TypeError("options must be a picosparse.steps.x86_sparse.Options")
    from picosparse.x86.convert.export import write_ir
    progress.say(f"x86-sparse: rewriting {model_dir} for OpenVINO + picosparse's sparse op")
    if out is None:
        out = Path(model_dir) / OUT_DIR
        if out.exists():
            shutil.rmtree(out)
    return write_ir(model_dir, out, options.sparse_threshold, options.nchw_ops,
                    options.name("sparse_threshold"))
