"""The x86 sparse 1x1-conv operator: kernels (sparse 1x1, plus dense NCHW depthwise /
KxK convs and upsampling around it), OpenVINO host, model rewrite, loader.

Public entry points:
  load(core=None) -> Path             build (once, cached) + optionally register the extension
  export_x86_sparse(model_dir, out_dir, sparse_threshold=0.6, nchw_ops=True) -> dict
  load_model(model_dir, threads=1, perf_counters=False) -> CompiledSparseModel (callable)
  pack(weight, bias) / spconv1x1(x, w, ...)   direct kernel access (tests, per-layer bench)
"""


def load(core=None):
    from picosparse.ops.runtime import load as _load
    return _load(core)


def export_x86_sparse(model_dir, out_dir, sparse_threshold=0.6, nchw_ops=True):
    from picosparse.ops.rewrite import export_x86_sparse as _export
    return _export(model_dir, out_dir, sparse_threshold, nchw_ops)


def load_model(model_dir, threads=1, perf_counters=False):
    from picosparse.ops.runtime import load_model as _load_model
    return _load_model(model_dir, threads, perf_counters)


def pack(weight, bias=None):
    from picosparse.ops.kernel import pack as _pack
    return _pack(weight, bias)


def spconv1x1(x, w, act="none", alpha=0.0, beta=0.0, threads=1, out=None):
    from picosparse.ops.kernel import spconv1x1 as _spconv
    return _spconv(x, w, act, alpha, beta, threads, out)
