"""Run an x86-sparse export: `load_model(dir, threads)` -> a callable compiled model.

Deploy code needs only this module, numpy and openvino (plus g++ only if the bundled
extension was built for another OpenVINO version and has to be rebuilt):

    from picosparse.ops import load_model
    net = load_model("runs/x/export_x86_sparse", threads=1)
    outputs = net(image)             # image: float32 [1, 3, H, W]; returns a list of arrays
"""

import json
from pathlib import Path

from picosparse.errors import DataError

F32_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
              "NUM_STREAMS": 1}


def load(core=None):
    """Path of the sparse-op library (built once, cached); registered on `core` if given."""
    from picosparse.ops.build import library_path
    lib = library_path()
    if core is not None:
        core.add_extension(str(lib))
    return lib


def _extension_for(model_dir, meta):
    """The bundled extension if built for this OpenVINO, else the cached/rebuilt one."""
    import openvino as ov
    bundled = Path(model_dir) / meta.get("extension", "libpicosparse_ops.so")
    if bundled.is_file() and meta.get("openvino") == ov.__version__:
        return bundled
    return load()


class CompiledSparseModel:
    """A compiled OpenVINO model with one infer request; call it with the input array(s)."""

    def __init__(self, compiled, threads):
        self.compiled = compiled
        self.threads = threads
        self.request = compiled.create_infer_request()

    def __call__(self, *inputs):
        feed = inputs[0] if len(inputs) == 1 and isinstance(inputs[0], dict) else \
            {i: x for i, x in enumerate(inputs)}
        self.request.infer(feed)
        return [self.request.get_output_tensor(i).data.copy()
                for i in range(len(self.compiled.outputs))]

    def profile(self):
        """Per-node times of the last inference (needs perf_counters=True at load)."""
        return self.request.get_profiling_info()


def set_op_threads(model, threads):
    """Pin the picosparse ops of `model` to `threads` threads (see extension.cpp: inside the
    CPU plugin they cannot see INFERENCE_NUM_THREADS). Returns how many ops were set."""
    n = 0
    for op in model.get_ops():
        if op.get_type_info().version_id == "picosparse":
            op.set_attribute("threads", int(threads))
            n += 1
    return n


def compile_config(threads, perf_counters=False, precision="f32"):
    cfg = dict(F32_CONFIG, INFERENCE_NUM_THREADS=int(threads))
    cfg["INFERENCE_PRECISION_HINT"] = precision
    if perf_counters:
        cfg["PERF_COUNT"] = True
    return cfg


def load_model(model_dir, threads=1, perf_counters=False):
    """Compile MODEL_DIR/model.xml (an `export_x86_sparse` output) on CPU, FP32, `threads` threads.

    `threads` is given to OpenVINO (INFERENCE_NUM_THREADS) and to every picosparse op.
    """
    import openvino as ov
    d = Path(model_dir)
    xml, meta_file = d / "model.xml", d / "x86_sparse.json"
    if not xml.is_file() or not meta_file.is_file():
        raise DataError(f"{d}: not an x86-sparse export (needs model.xml and x86_sparse.json); "
                        "run `picosparse export --x86-sparse`")
    meta = json.loads(meta_file.read_text())
    core = ov.Core()
    core.add_extension(str(_extension_for(d, meta)))
    model = core.read_model(str(xml))
    set_op_threads(model, threads)
    compiled = core.compile_model(model, "CPU", compile_config(threads, perf_counters))
    return CompiledSparseModel(compiled, threads)
