"""picosparse's BF16 sparse 1x1 kernel (AVX512-BF16): exact against a reference computed on
bf16-rounded weights and activations, within a stated tolerance of FP32, through every reader
and writer the OpenVINO op uses, and the `@bf16` spelling of load_model / bench / eval.

Tolerance against FP32: bf16 keeps 8 significant bits (relative rounding <= 2^-9 per value);
a sum of products of rounded values stays within 2% of the largest |output| on these layers.
Against the bf16 reference (products of bf16 values are exact in fp32, sums in fp32): 1e-5."""

import numpy as np
import pytest

from picosparse.errors import PicosparseError
from picosparse.x86 import kernel
from picosparse.x86.kernel import pack, spconv1x1
from test_ops import (_compile, _dw_block_model, _ghost_model, _head_model, _ov, _se_model,
                      _shuffle_model, _toy_model, assert_close, conv_ref, direct_ref,
                      sparse_weight)

BF16 = kernel.bf16_supported()
needs_bf16 = pytest.mark.skipif(not BF16, reason="this CPU has no AVX512-BF16")
VS_FP32 = 2e-2  # of max |output|: see the module docstring


def bf16(a):
    """a rounded to bf16 (nearest even), as float32."""
    u = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32)


def block_weight(rng, cout, cin, sparsity):
    """Zeros in whole (2j, 2j + 1) input-channel pairs, as `sparse_block: [1, 2]` prunes."""
    keep = rng.random((cout, (cin + 1) // 2)) >= sparsity
    return rng.standard_normal((cout, cin)).astype(np.float32) * keep.repeat(2, 1)[:, :cin]


# (n, cin, cout, h, w, sparsity, blocks): odd Cin (a pair with one real channel), tails of
# pixel tiles, 1x1 maps, wide Cin (narrow tiles), batch > 1
SHAPES = [(1, 16, 8, 4, 4, 0.75, False), (1, 37, 21, 7, 9, 0.8, False),
          (3, 24, 40, 5, 3, 0.6, True), (2, 64, 48, 33, 35, 0.85, True),
          (1, 320, 80, 1, 1, 0.75, True), (1, 515, 64, 3, 7, 0.9, False),
          (2, 96, 130, 20, 20, 0.5, True), (1, 5, 3, 1, 100, 0.0, False)]


@needs_bf16
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:6])))
def test_bf16_kernel_is_exact_on_bf16_values_and_close_to_fp32(shape):
    n, cin, cout, h, w, sp, blocks = shape
    rng = np.random.default_rng(cin * cout)
    wt = (block_weight if blocks else sparse_weight)(rng, cout, cin, sp)
    wt[min(1, cout - 1)] = 0  # an empty row: bias only
    b = rng.standard_normal(cout).astype(np.float32)
    x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
    for threads in (1, 2):
        y, isa = spconv1x1(x, pack(wt, b), act="hswish", threads=threads, bf16=True)
        assert isa == "avx512"
        assert_close(y, conv_ref(bf16(x), bf16(wt), b, "hswish"), 1e-5)
        assert_close(y, conv_ref(x, wt, b, "hswish"), VS_FP32)
    if sp and cin > 16:  # really bf16: fp32 values would miss the bf16 reference
        y32, _ = spconv1x1(x, pack(wt, b), act="hswish")
        assert not np.allclose(y, y32, rtol=0, atol=1e-6)


@needs_bf16
def test_bf16_gate_and_blocked_layouts():
    """A gate is folded into the weights per image, then rounded (bf16(w * g)); the blocked
    reader and writer pack / place the same values."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 48, 9, 11)).astype(np.float32)
    gate = rng.random((3, 48)).astype(np.float32)
    wt = block_weight(rng, 32, 48, 0.75)
    b = rng.standard_normal(32).astype(np.float32)
    y, _ = spconv1x1(x, pack(wt, b), gate=gate, bf16=True)
    for i in range(3):
        ref = conv_ref(bf16(x[i:i + 1]), bf16(wt * gate[i]), b)
        assert_close(y[i:i + 1], ref, 1e-5)
    for bi, bo in ((True, False), (False, True), (True, True)):
        yb, _ = spconv1x1(x, pack(wt, b), bf16=True, blocked_in=bi, blocked_out=bo)
        assert_close(yb, conv_ref(bf16(x), bf16(wt), b), 1e-5)


# kept-dense rows run several at a time: every tile width (1-5 vectors), row counts that leave
# a remainder, odd Cin, batch > 1
@needs_bf16
@pytest.mark.parametrize("shape", [(1, 128, 112, 40, 40), (2, 64, 20, 20, 20), (1, 33, 13, 10, 10),
                                   (1, 40, 25, 5, 6), (1, 16, 17, 3, 5), (3, 7, 5, 2, 9)],
                         ids=lambda s: "x".join(map(str, s)))
def test_dense_rows_are_exact(shape):
    n, cin, cout, h, w = shape
    rng = np.random.default_rng(cin + cout)
    wt = rng.standard_normal((cout, cin)).astype(np.float32) + 0.01
    b = rng.standard_normal(cout).astype(np.float32)
    x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
    for threads in (1, 2):
        y, _ = spconv1x1(x, pack(wt, b), act="hswish", threads=threads, bf16=True)
        assert_close(y, conv_ref(bf16(x), bf16(wt), b, "hswish"), 1e-5)


def test_without_avx512_bf16_the_fp32_kernel_runs(monkeypatch):
    """PICOSPARSE_ISA=avx2 stands in for a CPU without AVX512-BF16: bf16=True is the FP32
    kernel, bit for bit, and bf16_available says why."""
    monkeypatch.setenv("PICOSPARSE_ISA", "avx2")
    assert not kernel.bf16_supported()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 40, 8, 8)).astype(np.float32)
    sw = pack(sparse_weight(rng, 24, 40, 0.75))
    assert np.array_equal(spconv1x1(x, sw, bf16=True)[0], spconv1x1(x, sw)[0])
    from picosparse.x86.runtime import bf16_available
    ok, why = bf16_available()
    assert not ok and "PICOSPARSE_ISA" in why


def _compile_bf16(model, threads=1):
    from picosparse.x86.runtime import set_op_precision
    assert set_op_precision(model, "bf16") > 0
    return _compile(model, threads)


@needs_bf16
@pytest.mark.parametrize("build", [
    lambda rng: _toy_model(rng), _se_model, lambda rng: _shuffle_model(rng, True),
    lambda rng: _head_model(rng, "split"), _dw_block_model, lambda rng: _ghost_model(rng, True)],
    ids=["chain", "squeeze-excite", "shuffle", "head", "blocked", "ghost-concat"])
def test_bf16_op_in_rewritten_models(build):
    """Every reader (NCHW, blocked, NCHW + blocked halves of a ghost concat) and writer (NCHW,
    blocked, interleaved, channels-last parts) and the squeeze-excite gate, through the
    OpenVINO op at precision bf16, against the FP32 model."""
    import openvino as ov
    from picosparse.x86.convert.rewrite import rewrite_model
    ref_model, model = build(np.random.default_rng(6)), build(np.random.default_rng(6))
    rewrite_model(model, sparse_threshold=0.6)
    shape = list(ref_model.inputs[0].get_partial_shape().to_shape())
    xv = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    want = ov.Core().compile_model(ref_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(xv)
    want = [want[i] for i in range(len(ref_model.outputs))]
    f32 = _compile(model)(xv)
    for threads in (1, 2):
        got = _compile_bf16(model.clone(), threads)(xv)
        for i, w in enumerate(want):
            assert_close(got[i], w, VS_FP32)
        assert any(not np.array_equal(got[i], f32[i]) for i in range(len(want)))


def test_set_op_precision_sets_the_sparse_ops_and_the_convs():
    from picosparse.x86.convert.rewrite import rewrite_model
    from picosparse.x86.runtime import set_op_precision
    model = _dw_block_model(np.random.default_rng(1))
    rewrite_model(model, sparse_threshold=0.6)
    types = [op.get_type_name() for op in model.get_ops()]
    assert types.count("Conv2d") > 0 and types.count("SparseConv1x1") > 0
    assert set_op_precision(model, "bf16") == types.count("SparseConv1x1") + types.count("Conv2d")
    assert {op.get_attributes()["precision"] for op in model.get_ops()
            if op.get_type_name() in ("SparseConv1x1", "Conv2d")} == {"bf16"}
    assert "Convolution" not in types  # (no OpenVINO conv left out)


# (n, cin, cout, h, w, k, stride, pads, pool): the stem (3x3/2 + 3x3/2 max pool), widths
# leaving 1-4 vector chunks, left pad 0, Cout not a multiple of the 6-channel block, odd
# and even tap counts (5x5 on 2 channels: 50 taps), stride 1
STEM_SHAPES = [(1, 3, 24, 37, 41, 3, 2, (1, 1, 1, 1), (3, 2, 1, 1, 1, 1)),
               (2, 3, 16, 20, 140, 3, 2, (1, 1, 1, 1), None),
               (1, 3, 7, 23, 35, 3, 2, (1, 0, 0, 1), None),
               (1, 2, 5, 12, 10, 5, 2, (2, 2, 2, 2), None),
               (1, 5, 8, 11, 13, 3, 1, (1, 1, 1, 1), None)]


@needs_bf16
@pytest.mark.parametrize("shape", STEM_SHAPES, ids=lambda s: "x".join(map(str, s[:7])))
def test_bf16_stem_is_exact_on_bf16_values_and_close_to_fp32(shape):
    n, cin, cout, h, w, k, s, pads, pool = shape
    rng = np.random.default_rng(cout * h)
    x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
    wt = rng.standard_normal((cout, cin, k, k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    for threads in (1, 2):
        y, isa = kernel.conv2d(x, wt, b, s, pads, act="hswish", threads=threads, pool=pool,
                               bf16=True)
        assert isa == "avx512"
        assert_close(y, direct_ref(bf16(x), bf16(wt), b, 1, s, pads, "hswish", pool), 1e-5)
        assert_close(y, direct_ref(x, wt, b, 1, s, pads, "hswish", pool), VS_FP32)
    y32, _ = kernel.conv2d(x, wt, b, s, pads, act="hswish", pool=pool)
    assert not np.allclose(y, y32, rtol=0, atol=1e-6)  # really bf16


def test_bf16_leaves_depthwise_convs_fp32():
    """Depthwise convs run FP32 at either precision (pairing their taps cost more than it
    saved), bit for bit, on both of their paths (NCHW planes, channel-blocked)."""
    rng = np.random.default_rng(3)
    for c, h in ((32, 40), (48, 10)):
        x = rng.standard_normal((1, c, h, h)).astype(np.float32)
        wt = rng.standard_normal((c, 1, 5, 5)).astype(np.float32)
        y32 = kernel.conv2d(x, wt, None, 1, (2, 2, 2, 2), groups=c)[0]
        assert np.array_equal(kernel.conv2d(x, wt, None, 1, (2, 2, 2, 2), groups=c,
                                            bf16=True)[0], y32)


def _stem_model(rng):
    """image -> 3x3/2 conv + BN + Relu -> 3x3/2 max pool -> sparse 1x1: PicoDet's stem."""
    ov, ops = _ov()
    x = ops.parameter([1, 3, 30, 34], np.float32, name="image")
    c = ops.convolution(x, ops.constant(rng.standard_normal((12, 3, 3, 3)).astype(np.float32)),
                        [2, 2], [1, 1], [1, 1], [1, 1])
    bn = ops.batch_norm_inference(c, *(ops.constant(v.astype(np.float32)) for v in (
        rng.uniform(0.5, 1.5, 12), rng.normal(0, 0.1, 12), rng.normal(0, 0.1, 12),
        rng.uniform(0.5, 2, 12))), 1e-5)
    pool = ops.max_pool(ops.relu(bn), [2, 2], [1, 1], [1, 1], [1, 1], [3, 3])
    w = sparse_weight(rng, 16, 12, 0.75)[:, :, None, None]
    out = ops.convolution(pool.output(0), ops.constant(w), [1, 1], [0, 0], [0, 0], [1, 1])
    return ov.Model([out.output(0)], [x])


@needs_bf16
def test_bf16_stem_through_the_openvino_op():
    import openvino as ov
    from picosparse.x86.convert.rewrite import rewrite_model
    ref_model, model = _stem_model(np.random.default_rng(8)), _stem_model(np.random.default_rng(8))
    rewrite_model(model, sparse_threshold=0.6)
    convs = [op for op in model.get_ops() if op.get_type_name() == "Conv2d"]
    assert len(convs) == 1 and convs[0].get_attributes()["pool"]  # the stem, pool fused
    xv = np.random.default_rng(9).standard_normal((1, 3, 30, 34)).astype(np.float32)
    want = ov.Core().compile_model(ref_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(xv)[0]
    f32 = _compile(model.clone())(xv)[0]
    assert_close(f32, want, 1e-5)
    for threads in (1, 2):
        got = _compile_bf16(model.clone(), threads)(xv)[0]
        assert_close(got, want, VS_FP32)
        assert not np.array_equal(got, f32)


def test_load_model_refuses_an_unknown_precision(tmp_path):
    from picosparse.x86.runtime import META_NAME, load_model
    (tmp_path / META_NAME).write_text("{}")
    (tmp_path / "model.xml").write_text("")
    with pytest.raises(PicosparseError, match=r"--model .*@f16: an x86-sparse model runs at "
                                              r"f32 or bf16"):
        load_model(tmp_path, flag="--model", precision="f16")
