"""x86 runtimes for `picosparse bench`: Paddle Inference, Paddle-Lite (Python API), OpenVINO.

Each runner is built for one model and one thread count; `feed(inputs)` sets the inputs once
and `run()` is what gets timed. None of these runtimes has sparse kernels on x86: sparse
weights run through the same dense convolutions; X86SparseRunner runs an `export --x86-sparse`
model, whose sparse 1x1 convs are picosparse's own OpenVINO op (picosparse.x86). bench runs
them in a child process (deploy/worker.py) because they can take the process down: OpenVINO
2026.4 crashed (SIGSEGV, or "munmap_chunk(): invalid pointer") inside the multiclass_nms of a
PicoDet exported with NMS, on some inputs only (the same model without NMS never did; its
x86-sparse export crashed there too), and Paddle-Lite aborts on an ARM .nb.
"""

from pathlib import Path

from picosparse.deploy import sigstack
from picosparse.errors import ConfigError, DataError, PicosparseError, StackError

# bench --precision -> OpenVINO's INFERENCE_PRECISION_HINT
OV_PRECISION = {"f32": "f32", "bf16": "bf16", "f16": "f16"}
PRECISIONS = ("f32", "bf16")  # what a model path may ask for: DIR@bf16
REPORTED = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}  # OpenVINO's name -> our tables'


def reported(precision):
    """OpenVINO's precision name as picosparse's tables and JSON spell it (f32 -> fp32)."""
    return REPORTED.get(precision, precision)


def split_precision(model, default="f32", flag="--model"):
    """'runs/x/inference@bf16' -> ('runs/x/inference', 'bf16', True): one model at its own
    OpenVINO precision (a path that exists as written is taken as a path)."""
    text = str(model)
    path, sep, prec = text.rpartition("@")
    if sep and path and not Path(text).exists():
        if prec not in PRECISIONS:
            raise ConfigError(f"{flag} {text}: unknown precision @{prec} (expected "
                              f"{' or '.join('@' + p for p in PRECISIONS)})")
        return path, prec, True
    return text, default, False


class PaddleRunner:
    """Paddle Inference on CPU with oneDNN (what PaddleDetection's deploy code uses)."""

    name = "paddle"
    sets_threads = True

    def __init__(self, model_dir, threads, precision="f32"):
        from picosparse import paddle_env
        from picosparse.deploy.program import model_files
        if precision != "f32":
            raise PicosparseError(f"--precision {precision}: only the openvino runtime "
                                  "takes a precision; Paddle Inference runs FP32 here")
        inference = paddle_env.paddle_inference()
        model, params = model_files(model_dir, "--model")
        cfg = inference.Config(str(model), str(params))
        cfg.disable_gpu()
        cfg.enable_mkldnn()
        cfg.set_cpu_math_library_num_threads(int(threads))
        cfg.switch_ir_optim(True)
        cfg.disable_glog_info()
        self.predictor = inference.create_predictor(cfg)
        self.precision = "fp32"

    def input_names(self):
        return list(self.predictor.get_input_names())

    def feed(self, inputs):
        for n in self.input_names():
            self.predictor.get_input_handle(n).copy_from_cpu(inputs[n])

    def run(self):
        self.predictor.run()

    def outputs(self):
        return [self.predictor.get_output_handle(n).copy_to_cpu()
                for n in self.predictor.get_output_names()]


class OpenVINORunner:
    """OpenVINO reads model.pdmodel directly (its Paddle frontend)."""

    name = "openvino"
    sets_threads = True

    def __init__(self, model_dir, threads, precision="f32"):
        from picosparse.deploy.program import model_files
        try:
            import openvino as ov
        except ImportError as e:
            raise StackError(f"openvino is not importable ({e}); `make install`") from None
        from picosparse.x86.runtime import compile_config
        model, _ = model_files(model_dir, "--model")
        core = ov.Core()
        # FP32 unless asked: on AMX/AVX512-BF16 CPUs OpenVINO's default is bf16. The same
        # config as the x86-sparse models get (x86/runtime.py), so only the kernels differ.
        conf = compile_config(threads, False, OV_PRECISION[precision])
        try:
            with sigstack.kept():
                self.compiled = core.compile_model(core.read_model(str(model)), "CPU", conf)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise PicosparseError(f"--model {model_dir}: OpenVINO cannot compile it "
                                  f"({first[:200]})") from None
        self.request = self.compiled.create_infer_request()
        self.precision = _ov_precision(self.compiled)
        self._inputs = None

    def input_names(self):
        return [i.get_any_name() for i in self.compiled.inputs]

    def feed(self, inputs):
        self._inputs = {n: inputs[n] for n in self.input_names()}
        for n, v in self._inputs.items():
            self.request.set_tensor(n, _ov_tensor(v))

    def run(self):
        self.request.infer(share_outputs=True)  # views: the timed call copies nothing

    def outputs(self):
        return [self.request.get_output_tensor(i).data.copy()
                for i in range(len(self.compiled.outputs))]


def _ov_tensor(array):
    import openvino as ov
    return ov.Tensor(array)


def _ov_precision(compiled):
    """The precision OpenVINO actually picked (it may differ from the hint)."""
    return reported(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())


class X86SparseRunner:
    """An x86-sparse folder, loaded by picosparse.x86.runtime (its one loader): OpenVINO with
    the sparse op library, `threads` for OpenVINO and for every picosparse op; precision
    "bf16" runs picosparse's BF16 sparse kernel (DIR@bf16)."""

    name = "x86-sparse"
    sets_threads = True

    def __init__(self, model_dir, threads, precision="f32"):
        try:
            import openvino  # noqa: F401
        except ImportError as e:
            raise StackError(f"openvino is not importable ({e}); `make install`") from None
        from picosparse.x86.runtime import load_model
        self.model = load_model(model_dir, int(threads), flag="--model", precision=precision)
        self.precision = self.model.precision

    def input_names(self):
        return self.model.input_names()

    def feed(self, inputs):
        self.model.feed(inputs)

    def run(self):
        self.model.run()

    def outputs(self):
        return self.model.outputs()


class OpenVINOIRRunner(OpenVINORunner):
    """An OpenVINO IR folder (model.xml + model.bin, e.g. an NNCF INT8 model): FP32 hint,
    `threads` threads."""

    name = "openvino"
    sets_threads = True

    def __init__(self, model_dir, threads, precision="f32"):
        try:
            import openvino as ov
        except ImportError as e:
            raise StackError(f"openvino is not importable ({e}); `make install`") from None
        from picosparse.x86.runtime import compile_config
        core = ov.Core()
        try:
            with sigstack.kept():
                self.compiled = core.compile_model(
                    core.read_model(str(Path(model_dir) / "model.xml")), "CPU",
                    compile_config(threads, False, OV_PRECISION[precision]))
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise PicosparseError(f"--model {model_dir}: OpenVINO cannot compile it "
                                  f"({first[:200]})") from None
        self.request = self.compiled.create_infer_request()
        self.precision = _ov_precision(self.compiled)
        self._inputs = None


class LiteRunner:
    """Paddle-Lite's Python API on x86: MobileConfig + a .nb built with --valid-targets x86.

    Its Python MobileConfig has no thread setting: it runs one thread.
    """

    name = "lite"
    sets_threads = False

    def __init__(self, nb_path, threads, precision="f32"):
        from picosparse.deploy import nbfile
        if precision != "f32":
            raise PicosparseError(f"--precision {precision}: only the openvino runtime "
                                  "takes a precision; the x86 Paddle-Lite .nb runs FP32")
        targets = nbfile.compute_targets(nbfile.inspect(nb_path))
        if "x86" not in targets:
            raise PicosparseError(
                f"--model {nb_path}: built for {', '.join(sorted(targets)) or 'unknown'}, "
                "which cannot run on this x86 machine (loading it aborts the process); "
                "make an x86 one with `picosparse opt --valid-targets x86 --no-sparse`, or "
                "time the ARM .nb on a board with --adb SERIAL --benchmark-bin PATH")
        from picosparse import paddle_env
        lite = paddle_env.paddlelite()
        conf = lite.MobileConfig()
        conf.set_model_from_file(str(nb_path))
        self.predictor = lite.create_paddle_predictor(conf)
        self.precision = "fp32"

    def input_names(self):
        return list(self.predictor.get_input_names())

    def feed(self, inputs):
        for n in self.input_names():
            self.predictor.get_input_by_name(n).from_numpy(inputs[n])

    def run(self):
        self.predictor.run()

    def outputs(self):
        names = self.predictor.get_output_names()
        return [self.predictor.get_output(i).numpy() for i in range(len(names))]

RUNNERS = {"paddle": PaddleRunner, "openvino": OpenVINORunner, "lite": LiteRunner}


def check_inputs(runner, inputs, model):
    missing = [n for n in runner.input_names() if n not in inputs]
    if missing:
        raise DataError(f"--model {model}: unexpected model input(s) {', '.join(missing)} "
                        "(picosparse feeds image, im_shape, scale_factor)")
