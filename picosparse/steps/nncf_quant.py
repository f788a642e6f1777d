"""OpenVINO's own INT8 (NNCF post-training quantization): the x86 baseline for `bench`.

OpenVINO converts the exported model.pdmodel (its Paddle frontend), NNCF calibrates on the feeds
`quant` prepared and the INT8 model is saved as OpenVINO IR (model.xml + model.bin), which
`bench --runtime openvino` times and the Detector runs. No sparse kernels are involved: this is
what an x86 user would ship instead of a sparse model, so the sparse rows are compared to it.

Measured on PicoDet-S 320 (coco128, FP32 mAP 0.387): `ov.convert_model` folds the batch norms
into the convs first (`Core.read_model` keeps them, NNCF then quantizes the stem's raw output
and mAP fell to 0.09-0.15 whatever the range estimator); depthwise convs stay FP32 as in `quant`
(quantized: 0.147); so: 0.372.
"""

import contextlib
import io
import logging

from picosparse.deploy import sigstack
from picosparse.errors import DataError, PicosparseError, StackError


def quantize_openvino(model_dir, out_dir, feeds):
    """MODEL_DIR/model.pdmodel -> OUT_DIR/model.xml + model.bin, INT8 by NNCF on `feeds`."""
    try:
        import openvino as ov
        with contextlib.redirect_stdout(io.StringIO()):
            import nncf
    except ImportError as e:
        raise StackError(f"--backend openvino needs openvino and nncf ({e}); "
                         "run `make install`") from None
    logging.getLogger("nncf").setLevel(logging.WARNING)
    try:
        model = ov.convert_model(str(model_dir / "model.pdmodel"))
    except Exception as e:  # the frontend's conversion failures are not all RuntimeErrors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PicosparseError(f"--model-dir {model_dir}: OpenVINO cannot read it "
                              f"({first[:200]})") from None
    names = [i.get_any_name() for i in model.inputs]
    missing = [n for n in names if n not in feeds[0]]
    if missing:
        raise DataError(f"--model-dir {model_dir}: model input(s) {', '.join(missing)} cannot "
                        "be fed (picosparse feeds image, im_shape, scale_factor)")
    data = nncf.Dataset(feeds, lambda f: {n: f[n] for n in names})
    # NNCF compiles the model (calibration) on Cores of its own
    with contextlib.redirect_stdout(io.StringIO()), sigstack.kept(collect=True):
        q = nncf.quantize(model, data, subset_size=len(feeds),
                          ignored_scope=nncf.IgnoredScope(types=["GroupConvolution"]))
    ov.save_model(q, str(out_dir / "model.xml"), compress_to_fp16=False)
    return {"inputs": names}
