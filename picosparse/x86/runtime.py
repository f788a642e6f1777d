"""The one loader of an x86-sparse folder (`picosparse export --x86-sparse`, the x86_sparse
pipeline step): `load_model(dir, threads)` -> a compiled model to call or to time.

Deploy code needs only this module, numpy and openvino (plus g++ only if the bundled
extension was built for another OpenVINO version and has to be rebuilt):

    from picosparse.x86.runtime import load_model
    net = load_model("runs/x/inference/x86_sparse", threads=1)
    outputs = net(image)             # image: float32 [1, 3, H, W]; returns a list of arrays

`picosparse bench`, the Detector (deploy/runtimes.X86SparseRunner) and benchmarks/ load
through it.
"""

import json
from pathlib import Path

from picosparse.deploy import sigstack
from picosparse.errors import DataError, PicosparseError

META_NAME = "x86_sparse.json"
XML_NAME = "model.xml"
F32_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
              "NUM_STREAMS": 1}


def is_x86_sparse(path):
    """Whether `path` looks like an x86-sparse folder (x86_sparse.json, or an IR + no Paddle
    model; read_meta says what is missing)."""
    p = Path(path)
    return p.is_dir() and ((p / META_NAME).is_file() or (p / XML_NAME).is_file())


def read_meta(model_dir, flag=None):
    """x86_sparse.json of a complete x86-sparse folder; a one-line DataError naming `flag`
    (how the caller got the folder, e.g. "--model") otherwise."""
    d = Path(model_dir)
    where = f"{flag} {d}" if flag else str(d)
    for f in (d / XML_NAME, d / META_NAME):
        if not f.is_file():
            raise DataError(f"{where}: no {f.name} (not a complete x86-sparse export; "
                            "remake it with `picosparse export --x86-sparse`)")
    try:
        return json.loads((d / META_NAME).read_text())
    except ValueError as e:
        raise DataError(f"{where}: unreadable {META_NAME} ({e})") from None


def library(core=None):
    """Path of the sparse-op library (built once, cached); registered on `core` if given."""
    from picosparse.x86.build import library_path
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
    return library()


def set_op_precision(model, precision):
    """Run the sparse 1x1 ops and the convs of `model` at `precision` ("f32" | "bf16":
    picosparse's BF16 kernels, which the convs have for the stem only: their depthwise ones
    stay FP32). Returns how many ops took it: the convs of a folder whose bundled op library
    predates their BF16 kernel stay FP32 (sparse ops of one that predates theirs: an error)."""
    n = 0
    for op in model.get_ops():
        if op.get_type_info().version_id == "picosparse" and \
                op.get_type_name() in ("SparseConv1x1", "Conv2d"):
            op.set_attribute("precision", precision)
            if op.get_attributes().get("precision") == precision:
                n += 1
            elif op.get_type_name() == "SparseConv1x1":
                raise PicosparseError("its bundled op library predates the BF16 kernel; "
                                      "export the model again")
    return n


def bf16_available():
    """(True, None) if picosparse's BF16 sparse kernel runs here, else (False, why)."""
    from picosparse.x86 import kernel
    if kernel.bf16_supported():
        return True, None
    if kernel.selected_isa() != "avx512":
        return False, (f"PICOSPARSE_ISA selects the {kernel.selected_isa()} path (BF16 needs "
                       "avx512)")
    return False, "this CPU has no AVX512-BF16"


def set_op_threads(model, threads):
    """Pin the picosparse ops of `model` to `threads` threads (see openvino/extension.cpp:
    inside the CPU plugin they cannot see INFERENCE_NUM_THREADS). Returns how many ops."""
    n = 0
    for op in model.get_ops():
        if op.get_type_info().version_id == "picosparse":
            op.set_attribute("threads", int(threads))
            n += 1
    return n


def compile_config(threads, perf_counters=False, precision="f32"):
    """OpenVINO CPU config: `precision`, `threads` threads, one stream, latency; the same for
    x86-sparse and dense models, so only the kernels differ."""
    cfg = dict(F32_CONFIG, INFERENCE_NUM_THREADS=int(threads))
    cfg["INFERENCE_PRECISION_HINT"] = precision
    if perf_counters:
        cfg["PERF_COUNT"] = True
    return cfg


class SparseModel:
    """A compiled x86-sparse model with one infer request: call it with the input array(s),
    or feed() once and run() (what timing measures) then outputs()."""

    def __init__(self, compiled, threads, meta, precision="fp32"):
        self.compiled = compiled
        self.threads = threads
        self.meta = meta  # x86_sparse.json
        self.request = compiled.create_infer_request()
        self.precision = precision  # what its sparse ops run: "fp32" | "bf16"

    def __call__(self, *inputs):
        feed = inputs[0] if len(inputs) == 1 and isinstance(inputs[0], dict) else \
            {i: x for i, x in enumerate(inputs)}
        self.request.infer(feed)
        return self.outputs()

    def input_names(self):
        return [i.get_any_name() for i in self.compiled.inputs]

    def feed(self, inputs):
        """Set the inputs once ({name or index: array}; other names are ignored)."""
        import openvino as ov
        names = set(self.input_names())
        for k, v in inputs.items():
            if isinstance(k, int) or k in names:
                self.request.set_tensor(self.compiled.inputs[k] if isinstance(k, int) else k,
                                        ov.Tensor(v))

    def run(self):
        self.request.infer(share_outputs=True)  # views: the timed call copies nothing

    def outputs(self):
        return [self.request.get_output_tensor(i).data.copy()
                for i in range(len(self.compiled.outputs))]

    def profile(self):
        """Per-node times of the last inference (needs perf_counters=True at load)."""
        return self.request.get_profiling_info()


def load_model(model_dir, threads=1, perf_counters=False, flag=None, precision="f32"):
    """Compile MODEL_DIR/model.xml (an x86-sparse folder) on CPU, `threads` threads.

    `threads` is given to OpenVINO (INFERENCE_NUM_THREADS) and to every picosparse op.
    precision "bf16": the sparse 1x1 convs and the stem run picosparse's BF16 kernels (weights
    and activations rounded to bf16, fp32 sums) and OpenVINO's own ops BF16, picosparse's
    depthwise convs FP32; on a CPU without AVX512-BF16 (or with PICOSPARSE_ISA=avx2) all of it
    runs FP32, and the returned model's `precision` says "fp32". Errors are one line naming
    `flag` (how the caller got the folder) when given.
    """
    import openvino as ov
    d = Path(model_dir)
    meta = read_meta(d, flag)
    if precision not in ("f32", "bf16"):
        raise PicosparseError(f"{f'{flag} ' if flag else ''}{d}@{precision}: an x86-sparse "
                              "model runs at f32 or bf16")
    # BF16 where the kernels run, FP32 elsewhere (as OpenVINO does): net.precision says which
    ran = "bf16" if precision == "bf16" and bf16_available()[0] else "f32"
    core = ov.Core()
    core.add_extension(str(_extension_for(d, meta)))
    try:
        with sigstack.kept():
            model = core.read_model(str(d / XML_NAME))
            set_op_threads(model, threads)
            try:
                set_op_precision(model, ran)
            except PicosparseError as e:
                raise PicosparseError(f"{f'{flag} ' if flag else ''}{d}: {e}") from None
            compiled = core.compile_model(model, "CPU",
                                          compile_config(threads, perf_counters, precision))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PicosparseError(f"{f'{flag} ' if flag else ''}{d}: OpenVINO cannot compile this "
                              f"x86-sparse model ({first[:200]})") from None
    return SparseModel(compiled, threads, meta, "bf16" if ran == "bf16" else "fp32")
