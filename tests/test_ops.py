"""The x86 sparse 1x1 operator: kernel vs references on every ISA path, the OpenVINO op, the
model rewrite (BN/bias folding, activation fusion), and a whole PicoDet."""

import json
from functools import partial

import numpy as np
import pytest

from picosparse.errors import PicosparseError
from picosparse.x86 import kernel
from picosparse.x86.kernel import conv2d, pack, spconv1x1, supported_isas

ISAS = supported_isas()


def act_ref(v, act, alpha=0.0, beta=0.0):
    if act == "relu":
        return np.maximum(v, 0)
    if act == "hswish":
        return v * np.clip(v + 3, 0, 6) / 6
    if act == "hsigmoid":
        return np.clip(alpha * v + beta, 0, 1)
    if act == "leaky":
        return np.where(v > 0, v, alpha * v)
    return v


def conv_ref(x, w, b, act="none", alpha=0.0, beta=0.0):
    y = np.einsum("oc,nchw->nohw", w.astype(np.float64), x.astype(np.float64))
    return act_ref(y + b.reshape(1, -1, 1, 1), act, alpha, beta)


def sparse_weight(rng, cout, cin, sparsity, empty_rows=(), dense_rows=()):
    w = rng.standard_normal((cout, cin)).astype(np.float32)
    w[rng.random((cout, cin)) < sparsity] = 0
    for r in empty_rows:
        w[r] = 0
    for r in dense_rows:
        w[r] = rng.standard_normal(cin).astype(np.float32) + 0.1
    return w


def assert_close(y, ref, rtol=1e-5):
    scale = max(float(np.abs(ref).max()), 1e-6)
    err = float(np.abs(y - ref).max()) / scale
    assert err <= rtol, f"max error {err:.2e} of max |ref| {scale:.3g}"


# (n, cin, cout, h, w, sparsity): vector-width tails, odd H x W, batch > 1, 1x1 maps (SE),
# wide channel counts (narrow tiles), more than one pixel tile with a tail, and maps of 5-vector
# multiples (20x20 on AVX-512 / AVX2, 1x100 portable: 5-vector tiles, no tail).
SHAPES = [
    (1, 16, 8, 4, 4, 0.75),
    (1, 37, 21, 7, 9, 0.8),
    (3, 24, 40, 5, 3, 0.6),
    (2, 64, 48, 33, 35, 0.85),
    (1, 320, 80, 1, 1, 0.75),
    (1, 515, 64, 3, 7, 0.9),
    (2, 96, 130, 20, 20, 0.5),
    (1, 5, 3, 1, 100, 0.0),
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_kernel_matches_reference(monkeypatch, isa, shape):
    monkeypatch.setenv("PICOSPARSE_ISA", isa)
    n, cin, cout, h, wd, sp = shape
    rng = np.random.default_rng(hash(shape) % 2**32)
    w = sparse_weight(rng, cout, cin, sp, empty_rows=(0, cout - 1), dense_rows=(cout // 2,))
    b = rng.standard_normal(cout).astype(np.float32)
    x = rng.standard_normal((n, cin, h, wd)).astype(np.float32)
    sw = pack(w, b)
    for threads in (1, 2):
        y, used = spconv1x1(x, sw, threads=threads)
        assert used == isa
        assert_close(y, conv_ref(x, w, b))
    # empty rows give exactly the bias
    np.testing.assert_array_equal(y[:, 0], np.broadcast_to(b[0], y[:, 0].shape))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("act,alpha,beta", [("relu", 0, 0), ("hswish", 0, 0),
                                            ("hsigmoid", 0.2, 0.5), ("leaky", 0.1, 0)])
def test_kernel_activations(monkeypatch, isa, act, alpha, beta):
    monkeypatch.setenv("PICOSPARSE_ISA", isa)
    rng = np.random.default_rng(1)
    w = sparse_weight(rng, 19, 33, 0.7)
    b = rng.standard_normal(19).astype(np.float32)
    x = 3 * rng.standard_normal((2, 33, 6, 11)).astype(np.float32)
    y, _ = spconv1x1(x, pack(w, b), act=act, alpha=alpha, beta=beta, threads=2)
    assert_close(y, conv_ref(x, w, b, act, alpha, beta))


def aligned(shape, rng):
    """A 64-byte aligned array: at 20x20 (a 25-cache-line channel stride) the kernel reads x in
    place instead of packing it, as it does on OpenVINO's aligned buffers."""
    n = int(np.prod(shape))
    buf = np.empty(n + 16, np.float32)
    off = (-buf.ctypes.data % 64) // 4
    a = buf[off:off + n].reshape(shape)
    a[...] = rng.standard_normal(shape)
    return a


@pytest.mark.parametrize("isa", ISAS)
def test_kernel_in_place_tiles(monkeypatch, isa):
    monkeypatch.setenv("PICOSPARSE_ISA", isa)
    rng = np.random.default_rng(7)
    x = aligned((2, 72, 20, 20), rng)
    assert x.ctypes.data % 64 == 0
    w = sparse_weight(rng, 40, 72, 0.75, empty_rows=(5,))
    b = rng.standard_normal(40).astype(np.float32)
    for threads in (1, 2):
        y, _ = spconv1x1(x, pack(w, b), act="hswish", threads=threads)
        assert_close(y, conv_ref(x, w, b, "hswish"))


@pytest.mark.parametrize("isa", ISAS)
def test_kernel_gate_is_folded_per_image(monkeypatch, isa):
    """A squeeze-excite gate [N, Cin] scales x's channels, each image with its own gains."""
    monkeypatch.setenv("PICOSPARSE_ISA", isa)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 37, 9, 11)).astype(np.float32)
    gate = rng.random((3, 37, 1, 1)).astype(np.float32)
    gate[1, 5] = 0  # a closed gate
    w = sparse_weight(rng, 23, 37, 0.75, empty_rows=(2,))
    b = rng.standard_normal(23).astype(np.float32)
    for threads in (1, 2):
        y, _ = spconv1x1(x, pack(w, b), act="hswish", threads=threads, gate=gate)
        assert_close(y, conv_ref(x * gate, w, b, "hswish"))
    plain, _ = spconv1x1(x, pack(w, b))
    assert not np.allclose(plain, spconv1x1(x, pack(w, b), gate=gate)[0])
    with pytest.raises(ValueError, match="gate"):
        spconv1x1(x, pack(w, b), gate=gate[:2])


def dw_ref(x, w, b, stride, pad, act="none", alpha=0.0, beta=0.0):
    n, c, h, wd = x.shape
    k = w.shape[-1]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    y = np.zeros((n, c, ho, wo))
    for ky in range(k):
        for kx in range(k):
            y += w[None, :, ky, kx, None, None] * xp[:, :, ky:ky + stride * ho:stride,
                                                     kx:kx + stride * wo:stride]
    return act_ref(y + b.reshape(1, -1, 1, 1), act, alpha, beta)


# (n, c, h, w, k, stride, pad): 3x3/5x5, stride 1/2, odd and wide maps (> 64 columns: several
# column chunks), maps smaller than the kernel, batch > 1. Outputs of <= 100 pixels (and 5x5
# kernels up to 400) take the channel-blocked path: channel counts that leave a partial block
# on every ISA (5, 17, 37), exactly the 5x5 limit (20x20 out), one pixel past the 3x3 limit
# (NCHW path on a small map, 5-row blocks).
DW_SHAPES = [(1, 8, 10, 10, 3, 1, 1), (2, 5, 9, 7, 5, 2, 2), (1, 4, 40, 40, 3, 2, 1),
             (1, 3, 5, 5, 5, 1, 2), (1, 6, 11, 13, 3, 2, 1), (1, 2, 70, 90, 5, 1, 2),
             (1, 2, 3, 3, 3, 2, 1), (3, 17, 1, 1, 3, 1, 1), (1, 4, 33, 131, 3, 2, 1),
             (2, 37, 12, 9, 5, 1, 2), (1, 33, 20, 20, 5, 1, 2), (1, 20, 20, 20, 5, 2, 2),
             (1, 3, 101, 1, 3, 1, 1), (1, 5, 20, 20, 3, 1, 1)]


def _dw_case(shape):
    """(x, weight [C, K, K], bias, stride, pad) for a DW_SHAPES-style shape."""
    n, c, h, wd, k, s, p = shape
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal((n, c, h, wd)).astype(np.float32)
    w = rng.standard_normal((c, k, k)).astype(np.float32)
    return x, w, rng.standard_normal(c).astype(np.float32), s, p


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("shape", DW_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_depthwise_matches_reference(monkeypatch, isa, shape):
    monkeypatch.setenv("PICOSPARSE_ISA", isa)
    x, w, b, s, p = _dw_case(shape)
    c = x.shape[1]
    for threads, act in ((1, "none"), (2, "hswish")):
        y, used = conv2d(x, w, b, s, (p, p, p, p), groups=c, act=act, threads=threads)
        assert used == isa
        assert_close(y, dw_ref(x, w, b, s, p, act))


BLOCKED_IO = [(True, False), (False, True), (True, True)]


@pytest.mark.parametrize("isa", ISAS)
def test_kernel_blocked_layouts(monkeypatch, isa):
    """The blocked layout ([N, C/B, H*W, B], B = the ISA's vector width) in and out: 63 pixels
    (a partial tile and a partial pixel block), batch 2, a gated input, threads 1 and 2."""
    monkeypatch.setenv("PICOSPARSE_ISA", isa)
    rng = np.random.default_rng(12)
    w = sparse_weight(rng, 48, 32, 0.75, empty_rows=(3,), dense_rows=(5,))
    b = rng.standard_normal(48).astype(np.float32)
    sw = pack(w, b)
    x = rng.standard_normal((2, 32, 9, 7)).astype(np.float32)
    gate = rng.uniform(0, 1, (2, 32)).astype(np.float32)
    for blocked_in, blocked_out in BLOCKED_IO:
        for threads, g in ((1, None), (2, gate)):
            y, used = spconv1x1(x, sw, "hswish", threads=threads, gate=g, blocked_in=blocked_in,
                                blocked_out=blocked_out)
            assert used == isa
            xg = x if g is None else x * g[:, :, None, None]
            assert_close(y, conv_ref(xg, w, b, "hswish"))
    with pytest.raises(PicosparseError, match="divisible"):  # 18 channels: no whole blocks
        spconv1x1(x[:, :18], pack(w[:, :18], b), blocked_in=True)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("shape", [(1, 32, 40, 40, 5, 1, 2), (2, 16, 20, 20, 3, 2, 1),
                                   (1, 48, 9, 7, 3, 1, 1), (1, 16, 11, 13, 5, 2, 2),
                                   (1, 16, 160, 150, 3, 1, 1), (1, 16, 99, 130, 5, 2, 2)],
                         ids=lambda s: "x".join(map(str, s)))
def test_depthwise_blocked_layouts(monkeypatch, isa, shape):
    """Depthwise convs of any map size run channel-blocked when either side is blocked; with
    fewer channel blocks than threads, in bands of rows (a ragged last band too)."""
    monkeypatch.setenv("PICOSPARSE_ISA", isa)
    x, w, b, s, p = _dw_case(shape)
    c = x.shape[1]
    for (blocked_in, blocked_out), threads in zip(BLOCKED_IO, (1, 2, 2)):
        y, used = conv2d(x, w, b, s, (p, p, p, p), groups=c, act="hswish", threads=threads,
                         blocked_in=blocked_in, blocked_out=blocked_out)
        assert used == isa
        assert_close(y, dw_ref(x, w, b, s, p, "hswish"))
    with pytest.raises(PicosparseError, match="depthwise"):  # a pool: NCHW only
        conv2d(x, w, b, s, (p, p, p, p), groups=c, pool=(3, 2, 1, 1, 1, 1), blocked_out=True)


def direct_ref(x, w, b, groups, stride, pads, act="none", pool=None):
    """float64 grouped KxK conv (+ act, + max pool with -inf padding); pads = (t, l, b, r)."""
    n, cin, h, wd = x.shape
    cout, cin_g, k, _ = w.shape
    t, l, bt, r = pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (t, bt), (l, r)))
    ho, wo = (h + t + bt - k) // stride + 1, (wd + l + r - k) // stride + 1
    y = np.zeros((n, cout, ho, wo))
    cout_g = cout // groups
    for o in range(cout):
        g = o // cout_g
        for ci in range(cin_g):
            for ky in range(k):
                for kx in range(k):
                    y[:, o] += w[o, ci, ky, kx] * xp[:, g * cin_g + ci,
                                                     ky:ky + stride * ho:stride,
                                                     kx:kx + stride * wo:stride]
    y = act_ref(y + b.reshape(1, -1, 1, 1), act)
    if pool is None:
        return y
    pk, ps, pt, pl, pb, pr = pool
    yp = np.pad(y, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=-np.inf)
    fh, fw = (ho + pt + pb - pk) // ps + 1, (wo + pl + pr - pk) // ps + 1
    out = np.full((n, cout, fh, fw), -np.inf)
    for ky in range(pk):
        for kx in range(pk):
            out = np.maximum(out, yp[:, :, ky:ky + ps * fh:ps, kx:kx + ps * fw:ps])
    return out


# (n, cin, cout, groups, h, w, k, stride, pads t/l/b/r, pool): the stem (3->24, 3x3/2, fused
# 3x3/2 max pool; per-row GEMM like every dense conv with <= 256 taps), dense 3x3/1, Cout not a
# multiple of the GEMM's 6-channel block, dense 5x5, 7x7 and stride 3, groups = 2,
# asymmetric pads, "valid" convs, maps wider than 4 vectors, batch > 1, a pool with
# asymmetric pads, conv + pool over several bands of pooled rows.
CONV_SHAPES = [
    (1, 3, 24, 1, 37, 41, 3, 2, (1, 1, 1, 1), (3, 2, 1, 1, 1, 1)),
    (2, 5, 8, 1, 11, 13, 3, 1, (1, 1, 1, 1), None),
    (1, 4, 6, 1, 9, 70, 3, 1, (1, 1, 1, 1), None),
    (1, 3, 5, 1, 12, 10, 5, 2, (2, 2, 2, 2), (2, 2, 0, 0, 1, 1)),
    (1, 2, 4, 1, 15, 16, 7, 1, (3, 3, 3, 3), None),
    (1, 4, 4, 1, 17, 19, 3, 3, (1, 1, 1, 1), None),
    (1, 8, 12, 2, 10, 11, 3, 2, (0, 1, 1, 0), None),
    (1, 6, 6, 6, 9, 9, 5, 1, (0, 0, 0, 0), (3, 1, 1, 1, 1, 1)),
    (2, 3, 16, 1, 20, 140, 3, 2, (1, 1, 1, 1), (3, 2, 1, 1, 1, 1)),
    (2, 3, 8, 1, 70, 50, 3, 2, (1, 1, 1, 1), (3, 2, 1, 1, 1, 1)),  # 3 bands of pooled rows
    # 3x3 stride 2 GEMM convs (their patch from even / odd splits) with left pads 0 and 1,
    # odd and even widths
    (1, 3, 7, 1, 23, 35, 3, 2, (0, 1, 1, 0), None),
    (1, 2, 5, 1, 16, 34, 3, 2, (1, 0, 0, 1), None),
    # over 256 taps per output channel (no per-row GEMM): 4-channel blocks on the fast path,
    # with and without a pool, and on the generic path (7x7)
    (1, 32, 8, 1, 9, 11, 3, 2, (1, 1, 1, 1), None),
    (1, 32, 8, 1, 12, 14, 3, 2, (1, 1, 1, 1), (3, 2, 1, 1, 1, 1)),
    (1, 6, 8, 1, 10, 12, 7, 1, (3, 3, 3, 3), None),
    # depthwise, channel-blocked, asymmetric pads
    (1, 18, 18, 18, 10, 11, 3, 2, (0, 1, 1, 0), None),
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "x".join(map(str, s[:8])))
def test_conv2d_matches_reference(monkeypatch, isa, shape):
    monkeypatch.setenv("PICOSPARSE_ISA", isa)
    n, cin, cout, g, h, wd, k, s, pads, pool = shape
    rng = np.random.default_rng(sum(shape[:8]))
    x = rng.standard_normal((n, cin, h, wd)).astype(np.float32)
    w = rng.standard_normal((cout, cin // g, k, k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    for threads, act in ((1, "none"), (2, "hswish")):  # "none": negatives meet the -inf pad
        y, used = conv2d(x, w, b, s, pads, groups=g, act=act, threads=threads, pool=pool)
        assert used == isa
        assert_close(y, direct_ref(x, w, b, g, s, pads, act, pool))


def test_conv2d_rejects_bad_groups():
    x = np.zeros((1, 6, 5, 5), np.float32)
    with pytest.raises(ValueError, match="groups=4"):
        conv2d(x, np.zeros((8, 1, 3, 3), np.float32), groups=4)


def test_upsample_op_replaces_nearest_interpolate():
    """Interpolate(nearest, asymmetric, integer scales) -> picosparse Upsample, same output;
    other interpolations stay OpenVINO's."""
    import openvino as ov
    import openvino.opset13 as ops
    from picosparse.x86.convert.rewrite import rewrite_model

    def model(mode, scales):
        x = ops.parameter([2, 3, 5, 4], np.float32)
        y = ops.interpolate(x, ops.constant(np.array(scales, np.float32)), mode, "scales",
                            coordinate_transformation_mode="asymmetric", nearest_mode="simple",
                            axes=ops.constant(np.array([2, 3], np.int64)))
        w = np.ones((4, 3, 1, 1), np.float32)
        w[:, :, 0, 0] = np.random.default_rng(0).standard_normal((4, 3)) * (
            np.random.default_rng(1).random((4, 3)) > 0.7)
        z = ops.convolution(y, ops.constant(w), [1, 1], [0, 0], [0, 0], [1, 1])
        return ov.Model([z], [x])

    xv = np.random.default_rng(2).standard_normal((2, 3, 5, 4)).astype(np.float32)
    for scales, want_up in (([2, 2], 1), ([3, 2], 1), ([1.5, 2], 0)):
        ref, m = model("nearest", scales), model("nearest", scales)
        stats = rewrite_model(m, sparse_threshold=0.6)
        assert stats["upsample"] == want_up
        types = [op.get_type_name() for op in m.get_ordered_ops()]
        assert ("Upsample" in types) == bool(want_up) and ("Interpolate" in types) != bool(want_up)
        assert_close(_compile(m)(xv)[0], _compile(ref)(xv)[0], 1e-6)
    lin = model("linear", [2, 2])
    assert rewrite_model(lin, sparse_threshold=0.6)["upsample"] == 0


def test_depthwise_vs_paddle():
    from picosparse.paddle_env import stack
    paddle = stack().paddle
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 24, 19, 23)).astype(np.float32)
    w = rng.standard_normal((24, 1, 5, 5)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    for s in (1, 2):
        ref = paddle.nn.functional.conv2d(paddle.to_tensor(x), paddle.to_tensor(w),
                                          paddle.to_tensor(b), stride=s, padding=2,
                                          groups=24).numpy()
        y, _ = conv2d(x, w, b, s, (2, 2, 2, 2), groups=24, threads=2)
        assert_close(y, ref)


def test_kernel_vs_paddle_conv2d():
    from picosparse.paddle_env import stack
    paddle = stack().paddle
    rng = np.random.default_rng(2)
    w = sparse_weight(rng, 45, 70, 0.8, empty_rows=(3,), dense_rows=(7,))
    b = rng.standard_normal(45).astype(np.float32)
    x = rng.standard_normal((2, 70, 13, 17)).astype(np.float32)
    ref = paddle.nn.functional.conv2d(paddle.to_tensor(x), paddle.to_tensor(w[:, :, None, None]),
                                      paddle.to_tensor(b)).numpy()
    y, _ = spconv1x1(x, pack(w, b), threads=2)
    assert_close(y, ref)


def test_pack_format():
    w = np.array([[0, 2, 0], [0, 0, 0], [1, 0, 3]], np.float32)
    sw = pack(w)
    assert sw.rowptr.tolist() == [0, 1, 1, 3]
    assert sw.cols.tolist()[:3] == [1, 0, 2] and sw.vals.tolist()[:3] == [2, 1, 3]
    assert sw.nnz == 3 and len(sw.cols) == 4  # one padding entry
    assert pack(np.zeros((2, 4), np.float32)).nnz == 0


def test_isa_env_validated(monkeypatch):
    monkeypatch.setenv("PICOSPARSE_ISA", "sse9")
    with pytest.raises(PicosparseError, match="PICOSPARSE_ISA"):
        spconv1x1(np.zeros((1, 2, 1, 1), np.float32), pack(np.ones((1, 2), np.float32)))
    monkeypatch.setenv("PICOSPARSE_ISA", "portable")
    assert kernel.selected_isa() == "portable"


def test_unsupported_isa_rejected(monkeypatch):
    missing = [i for i in ("avx512", "avx2") if i not in ISAS]
    if not missing:
        pytest.skip("this CPU supports every path")
    monkeypatch.setenv("PICOSPARSE_ISA", missing[0])
    with pytest.raises(PicosparseError):
        kernel.selected_isa()


# ------------------------------------------------------------------ OpenVINO op and rewrite
def _ov():
    import openvino as ov
    import openvino.opset13 as ops
    return ov, ops


def _compile(model, threads=1):
    ov, _ = _ov()
    from picosparse.x86.runtime import library, set_op_threads
    core = ov.Core()
    library(core)
    set_op_threads(model, threads)
    return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                             "INFERENCE_NUM_THREADS": threads})


@pytest.mark.parametrize("isa", ISAS)
def test_openvino_op_one_node(monkeypatch, isa):
    monkeypatch.setenv("PICOSPARSE_ISA", isa)
    from openvino.utils.node_factory import NodeFactory
    from picosparse.x86.runtime import library
    ov, ops = _ov()
    rng = np.random.default_rng(3)
    w = sparse_weight(rng, 24, 40, 0.75, empty_rows=(1,))
    b = rng.standard_normal(24).astype(np.float32)
    sw = pack(w, b)
    f = NodeFactory("opset13")
    f.add_extension(str(library()))
    x = ops.parameter([2, 40, 9, 13], np.float32)
    attrs = {"cout": 24, "se_channels": 0, "activation": "hswish", "alpha": 0.0, "beta": 0.0}
    node = f.create("SparseConv1x1", [x.output(0), ops.constant(sw.segment()).output(0)], attrs)
    assert list(node.get_output_partial_shape(0).to_shape()) == [2, 24, 9, 13]
    xv = rng.standard_normal((2, 40, 9, 13)).astype(np.float32)
    for threads in (1, 2):
        y = _compile(ov.Model([node.output(0)], [x]), threads)(xv)[0]
        assert_close(y, conv_ref(xv, w, b, "hswish"))
    # a weights input that does not describe `cout` rows over Cin channels fails at build time
    bad = {"one entry short": (sw.segment()[:-1], attrs),
           "cout too small": (sw.segment(), {**attrs, "cout": 23}),
           "a column past Cin": (pack(w, b).segment(), attrs)}
    bad["a column past Cin"][0][25 + int(np.argmax(sw.cols))] = 40
    for why, (seg, a) in bad.items():
        with pytest.raises(Exception, match="weights input does not match"):
            f.create("SparseConv1x1", [x.output(0), ops.constant(seg).output(0)], a)


def test_openvino_conv2d_op_checks_its_weights():
    """Conv2d's one weights input is cout * Cin/groups * K * K weights, then cout biases."""
    from openvino.utils.node_factory import NodeFactory
    from picosparse.x86.runtime import library
    ov, ops = _ov()
    rng = np.random.default_rng(5)
    w = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    f = NodeFactory("opset13")
    f.add_extension(str(library()))
    x = ops.parameter([2, 8, 9, 7], np.float32)
    attrs = {"cout": 8, "kernel": 3, "groups": 8, "stride": 2, "pads": [1, 1, 1, 1],
             "activation": "relu", "alpha": 0.0, "beta": 0.0, "pool": []}
    node = f.create("Conv2d", [x.output(0), ops.constant(np.concatenate([w.ravel(), b]))
                               .output(0)], attrs)
    assert list(node.get_output_partial_shape(0).to_shape()) == [2, 8, 5, 4]
    xv = rng.standard_normal((2, 8, 9, 7)).astype(np.float32)
    y = _compile(ov.Model([node.output(0)], [x]), 1)(xv)[0]
    assert_close(y, dw_ref(xv, w[:, 0], b, 2, 1, "relu"))
    with pytest.raises(Exception, match="weights must hold"):
        f.create("Conv2d", [x.output(0), ops.constant(w.ravel()).output(0)], attrs)


def _conv1x1(rng, inp, cout, cin, bias=None, sparsity=0.75, empty_rows=(1,)):
    """A 1x1 Convolution node with a random sparse weight (+ a per-channel bias Add)."""
    ov, ops = _ov()
    w = sparse_weight(rng, cout, cin, sparsity, empty_rows=empty_rows)
    c = ops.convolution(inp, ops.constant(w.reshape(cout, cin, 1, 1)), [1, 1], [0, 0], [0, 0],
                        [1, 1])
    return c if bias is None else ops.add(c, ops.constant(
        rng.normal(0, bias, (1, cout, 1, 1)).astype(np.float32)))


def _toy_model(rng, sparse=0.8):
    """x -> conv1x1+BN+HSwish -> conv1x1+bias+HardSigmoid -> (dense-ish conv1x1 + Relu) ->
    depthwise 3x3 s2 + BN + Relu -> conv1x1 (two consumers: left unfused), covering every
    folding/fusion rule."""
    ov, ops = _ov()
    x = ops.parameter([1, 20, 6, 7], np.float32, name="image")

    def conv(inp, cout, cin, sp):
        return _conv1x1(rng, inp, cout, cin, sparsity=sp, empty_rows=(0,))

    c1 = conv(x, 32, 20, sparse)
    bn = ops.batch_norm_inference(c1, *(ops.constant(v.astype(np.float32)) for v in (
        rng.uniform(0.5, 1.5, 32), rng.normal(0, 0.1, 32), rng.normal(0, 0.1, 32),
        rng.uniform(0.5, 2, 32))), 1e-5)
    a1 = ops.hswish(bn)
    c2 = conv(a1, 16, 32, sparse)
    add = ops.add(c2, ops.constant(rng.normal(0, 1, (1, 16, 1, 1)).astype(np.float32)))
    a2 = ops.hard_sigmoid(add, ops.constant(np.float32(0.2)), ops.constant(np.float32(0.5)))
    c3 = conv(a2, 16, 16, 0.3)  # below threshold: stays dense
    a3 = ops.relu(c3)
    dw = ops.group_convolution(a3, ops.constant(rng.standard_normal((16, 1, 1, 3, 3))
                                                .astype(np.float32)), [2, 2], [1, 1], [1, 1],
                               [1, 1])
    dbn = ops.batch_norm_inference(dw, *(ops.constant(v.astype(np.float32)) for v in (
        rng.uniform(0.5, 1.5, 16), rng.normal(0, 0.1, 16), rng.normal(0, 0.1, 16),
        rng.uniform(0.5, 2, 16))), 1e-5)
    c4 = conv(ops.relu(dbn), 8, 16, sparse)
    out1 = ops.relu(c4)
    out2 = ops.multiply(c4, ops.constant(np.float32(2.0)))
    return ov.Model([out1.output(0), out2.output(0)], [x])


def test_rewrite_folds_and_fuses():
    from picosparse.x86.convert.rewrite import rewrite_model
    rng = np.random.default_rng(4)
    ref_model, model = _toy_model(np.random.default_rng(4)), _toy_model(np.random.default_rng(4))
    # dense_1x1 off: the 30%-zero conv stays OpenVINO's
    kept = _toy_model(np.random.default_rng(4))
    stats = rewrite_model(kept, sparse_threshold=0.6, nchw_ops=True, dense_1x1=False)
    assert stats["replaced"] == 3 and stats["kept_dense_1x1"] == 1 and stats["depthwise"] == 1
    assert stats["dense_1x1_on_op"] == 0
    acts = [(tuple(l["folded"]), l["activation"]) for l in stats["layers"]
            if l["kind"] == "sparse1x1"]
    assert acts == [(("BatchNormInference",), "hswish"), (("Add",), "hsigmoid"), ((), "none")]
    types = [op.get_type_name() for op in kept.get_ordered_ops()]
    assert "BatchNormInference" not in types and "HSwish" not in types
    assert types.count("Convolution") == 1 and types.count("SparseConv1x1") == 3
    assert "GroupConvolution" not in types and types.count("Conv2d") == 1
    # the default: it runs picosparse's op too, with all its weights and its Relu fused
    stats = rewrite_model(model, sparse_threshold=0.6, nchw_ops=True)
    assert (stats["replaced"], stats["dense_1x1_on_op"], stats["kept_dense_1x1"]) == (3, 1, 0)
    below = [l for l in stats["layers"] if l.get("below_threshold")]
    assert len(below) == 1 and below[0]["activation"] == "relu"
    assert below[0]["zero_fraction"] < 0.6 and below[0]["nnz"] > 0.6 * 16 * 16
    types = [op.get_type_name() for op in model.get_ordered_ops()]
    assert types.count("Convolution") == 0 and types.count("SparseConv1x1") == 4
    xv = rng.standard_normal((1, 20, 6, 7)).astype(np.float32)
    want = _compile(ref_model)(xv)
    for m in (kept, model):
        for threads in (1, 2):
            got = _compile(m, threads)(xv)
            for i in range(2):
                assert_close(got[i], want[i], 1e-5)
    keep_dw = _toy_model(np.random.default_rng(4))
    assert rewrite_model(keep_dw, 0.6, nchw_ops=False)["depthwise"] == 0
    assert "GroupConvolution" in [op.get_type_name() for op in keep_dw.get_ordered_ops()]


def _se_model(rng):
    """x -> sparse 1x1 + Relu -> y; squeeze-excite on y (ReduceMean -> 1x1 + bias + Relu ->
    1x1 + bias + HardSigmoid -> Multiply(y, gate)) -> sparse 1x1, as PaddleDetection's ESNet
    exports it."""
    ov, ops = _ov()
    x = ops.parameter([2, 24, 9, 11], np.float32, name="image")

    conv = partial(_conv1x1, rng)

    y = ops.relu(conv(x, 56, 24))
    mean = ops.reduce_mean(y, ops.constant(np.array([2, 3], np.int64)), keep_dims=True)
    # reduce rows of 22 nonzeros (whole gathered vectors + a tail on every ISA), expand of 2
    h = ops.relu(conv(mean, 8, 56, 0.5, sparsity=0.6))
    gate = ops.hard_sigmoid(conv(h, 56, 8, 1.0), ops.constant(np.float32(0.2)),
                            ops.constant(np.float32(0.5)))
    out = conv(ops.multiply(y, gate), 16, 56)
    return ov.Model([out.output(0)], [x])


def _dw_block_model(rng):
    """sparse 1x1 -> depthwise 3x3 -> squeeze-excite -> sparse 1x1 -> depthwise 5x5 / 2 ->
    sparse 1x1, 32 channels (ESNet-like): each depthwise conv's output can go blocked."""
    ov, ops = _ov()
    x = ops.parameter([2, 32, 12, 10], np.float32, name="image")

    conv = partial(_conv1x1, rng)

    def dw(inp, k, s):
        w = (rng.standard_normal((32, 1, 1, k, k)) * 0.3).astype(np.float32)
        return ops.hswish(ops.group_convolution(inp, ops.constant(w), [s, s], [k // 2] * 2,
                                                [k // 2] * 2, [1, 1]))

    y = dw(ops.relu(conv(x, 32, 32)), 3, 1)
    mean = ops.reduce_mean(y, ops.constant(np.array([2, 3], np.int64)), keep_dims=True)
    gate = ops.hard_sigmoid(conv(ops.relu(conv(mean, 8, 32, 0.5)), 32, 8, 1.0),
                            ops.constant(np.float32(0.2)), ops.constant(np.float32(0.5)))
    y = dw(ops.relu(conv(ops.multiply(y, gate), 32, 32)), 5, 2)
    return ov.Model([conv(y, 16, 32).output(0)], [x])


@pytest.mark.parametrize("isa", ISAS)
def test_rewrite_blocks_tensors_around_depthwise(monkeypatch, isa):
    monkeypatch.setenv("PICOSPARSE_ISA", isa)
    from picosparse.x86.convert.rewrite import rewrite_model
    ref_model, model = (_dw_block_model(np.random.default_rng(10)),
                        _dw_block_model(np.random.default_rng(10)))
    stats = rewrite_model(model, sparse_threshold=0.6)
    assert stats["depthwise"] == 2 and stats["se_gates"] == 1
    assert stats["blocked_tensors"] == 2  # dw -> sparse, twice
    layouts = [l.get("layout") for l in stats["layers"] if not l.get("fused_into")]
    assert layouts == [None, {"in": "nchw", "out": "blocked"}, {"in": "blocked", "out": "nchw"},
                       {"in": "nchw", "out": "blocked"}, {"in": "blocked", "out": "nchw"}]
    xv = np.random.default_rng(11).standard_normal((2, 32, 12, 10)).astype(np.float32)
    want = _compile(ref_model)(xv)[0]
    for threads in (1, 2):
        assert_close(_compile(model, threads)(xv)[0], want, 1e-5)


def _ghost_model(rng, se):
    """ESNet's block body: sparse 1x1 + Relu -> depthwise 3x3 -> Concat(1x1 output, depthwise
    output) -> (squeeze-excite ->) sparse 1x1."""
    ov, ops = _ov()
    x = ops.parameter([2, 24, 7, 9], np.float32, name="image")

    conv = partial(_conv1x1, rng)

    pw = ops.relu(conv(x, 16, 24))
    dw = ops.group_convolution(pw, ops.constant(
        (rng.standard_normal((16, 1, 1, 3, 3)) * 0.3).astype(np.float32)), [1, 1], [1, 1],
        [1, 1], [1, 1])
    y = ops.concat([pw.output(0), dw.output(0)], 1)
    if se:
        mean = ops.reduce_mean(y, ops.constant(np.array([2, 3], np.int64)), keep_dims=True)
        gate = ops.hard_sigmoid(conv(ops.relu(conv(mean, 8, 32, 0.5)), 32, 8, 1.0),
                                ops.constant(np.float32(0.2)), ops.constant(np.float32(0.5)))
        y = ops.multiply(y, gate)
    return ov.Model([conv(y, 24, 32).output(0)], [x])


@pytest.mark.parametrize("isa", ISAS)
def test_rewrite_blocks_ghost_concat(monkeypatch, isa):
    """The depthwise half of a [1x1, depthwise] concat is written blocked; the sparse reader
    takes the first 16 channels as NCHW, the rest blocked (packing and SE channel means)."""
    monkeypatch.setenv("PICOSPARSE_ISA", isa)
    from picosparse.x86.convert.rewrite import rewrite_model
    xv = np.random.default_rng(16).standard_normal((2, 24, 7, 9)).astype(np.float32)
    for se in (True, False):
        ref_model, model = (_ghost_model(np.random.default_rng(15), se),
                            _ghost_model(np.random.default_rng(15), se))
        stats = rewrite_model(model, sparse_threshold=0.6)
        assert stats["blocked_tensors"] == 1 and stats["se_gates"] == se
        layouts = [l.get("layout") for l in stats["layers"] if not l.get("fused_into")]
        assert layouts == [None, {"in": "nchw", "out": "blocked"},
                           {"in": "nchw 16 + blocked", "out": "nchw"}]
        want = _compile(ref_model)(xv)[0]
        for threads in (1, 2):
            assert_close(_compile(model, threads)(xv)[0], want, 1e-5)


def _shuffle_model(rng, conv_b=True):
    """ESNet's stride-1 block: split channels in half, a sparse 1x1 on the second half,
    concat, 2-group channel shuffle (reshape / transpose / reshape), then a sparse 1x1;
    conv_b=False: the second half only through a Relu (no op to fuse the shuffle into)."""
    ov, ops = _ov()
    x = ops.parameter([2, 32, 7, 9], np.float32, name="image")

    conv = partial(_conv1x1, rng)

    halves = ops.variadic_split(x, ops.constant(np.int64(1)),
                                ops.constant(np.array([16, 16], np.int64)))
    b = conv(halves.output(1), 16, 16) if conv_b else halves.output(1)
    cat = ops.concat([halves.output(0), ops.relu(b).output(0)], 1)
    t = ops.reshape(cat, ops.constant(np.array([2, 2, 16, 7, 9], np.int64)), False)
    t = ops.transpose(t, ops.constant(np.array([0, 2, 1, 3, 4], np.int64)))
    t = ops.reshape(t, ops.constant(np.array([2, 32, 7, 9], np.int64)), False)
    return ov.Model([conv(t, 8, 32).output(0)], [x])


@pytest.mark.parametrize("isa", ISAS)
def test_rewrite_fuses_concat_shuffle(monkeypatch, isa):
    monkeypatch.setenv("PICOSPARSE_ISA", isa)
    from picosparse.x86.convert.rewrite import rewrite_model
    xv = np.random.default_rng(14).standard_normal((2, 32, 7, 9)).astype(np.float32)
    for conv_b in (True, False):  # into the sparse op writing b / a ConcatShuffle op
        ref_model, model = (_shuffle_model(np.random.default_rng(13), conv_b),
                            _shuffle_model(np.random.default_rng(13), conv_b))
        stats = rewrite_model(model, sparse_threshold=0.6)
        assert stats["concat_shuffles"] == 1 and stats["replaced"] == 1 + conv_b
        types = [op.get_type_name() for op in model.get_ordered_ops()]
        assert ("ConcatShuffle" in types) != conv_b
        assert "Concat" not in types and "Transpose" not in types
        folded = [l["folded"] for l in stats["layers"]]
        assert (["Concat, ChannelShuffle"] in folded) == conv_b
        want = _compile(ref_model)(xv)[0]
        for threads in (1, 2):
            assert_close(_compile(model, threads)(xv)[0], want, 1e-5)


@pytest.mark.parametrize("isa", ISAS)
def test_rewrite_fuses_squeeze_excite(monkeypatch, isa):
    monkeypatch.setenv("PICOSPARSE_ISA", isa)
    from picosparse.x86.convert.rewrite import rewrite_model
    ref_model, model = _se_model(np.random.default_rng(6)), _se_model(np.random.default_rng(6))
    stats = rewrite_model(model, sparse_threshold=0.6)
    assert stats["replaced"] == 4 and stats["se_gates"] == 1
    fused = [l for l in stats["layers"] if l.get("fused_into")]
    last = stats["layers"][-1]
    assert len(fused) == 2 and {l["fused_into"] for l in fused} == {last["op"]}
    assert "SE block" in last["folded"]
    types = [op.get_type_name() for op in model.get_ordered_ops()]
    assert types.count("SparseConv1x1") == 2  # the SE convs run inside the consumer
    assert "ReduceMean" not in types and "Multiply" not in types
    xv = np.random.default_rng(7).standard_normal((2, 24, 9, 11)).astype(np.float32)
    xv[1] *= 3  # a different gate per image
    want = _compile(ref_model)(xv)[0]
    for threads in (1, 2):
        assert_close(_compile(model, threads)(xv)[0], want, 1e-5)


def _head_model(rng, mode):
    """A detection head's tail: sparse 1x1 + bias -> VariadicSplit([13, 7]) -> (Sigmoid ->)
    Reshape [N, C, H*W] -> Transpose [0, 2, 1] per part, as PicoDet's head exports it (mode
    "split"); "single": no split, one sigmoid part; "shared": one part and a second consumer
    of the conv (must stay NCHW)."""
    ov, ops = _ov()
    n, h, w = 2, 9, 7  # 63 pixels: a partial tile and a partial pixel block
    x = ops.parameter([n, 24, h, w], np.float32, name="image")
    wt = sparse_weight(rng, 20, 24, 0.75, empty_rows=(2,))
    conv = ops.add(ops.convolution(x, ops.constant(wt.reshape(20, 24, 1, 1)), [1, 1], [0, 0],
                                   [0, 0], [1, 1]),
                   ops.constant(rng.normal(0, 1, (1, 20, 1, 1)).astype(np.float32)))

    def tail(t, c, sig):
        if sig:
            t = ops.sigmoid(t)
        t = ops.reshape(t, ops.constant(np.array([n, c, -1], np.int64)), False)
        return ops.transpose(t, ops.constant(np.array([0, 2, 1], np.int64)))

    if mode == "single":
        return ov.Model([tail(conv, 20, True).output(0)], [x])
    if mode == "shared":
        return ov.Model([tail(conv, 20, False).output(0), ops.relu(conv).output(0)], [x])
    parts = ops.variadic_split(conv, ops.constant(np.int64(1)),
                               ops.constant(np.array([13, 7], np.int64)))
    return ov.Model([tail(parts.output(0), 13, True).output(0),
                     ops.multiply(tail(parts.output(1), 7, False),
                                  ops.constant(np.float32(1.0))).output(0)], [x])


@pytest.mark.parametrize("isa", ISAS)
def test_rewrite_writes_head_outputs_channels_last(monkeypatch, isa):
    monkeypatch.setenv("PICOSPARSE_ISA", isa)
    from picosparse.x86.convert.rewrite import rewrite_model
    xv = np.random.default_rng(9).standard_normal((2, 24, 9, 7)).astype(np.float32) * 3
    for mode in ("split", "single", "shared"):
        ref_model = _head_model(np.random.default_rng(8), mode)
        model = _head_model(np.random.default_rng(8), mode)
        names = [o.get_names() for o in model.outputs]
        stats = rewrite_model(model, sparse_threshold=0.6)
        types = [op.get_type_name() for op in model.get_ordered_ops()]
        folded = stats["layers"][0]["folded"]
        if mode == "shared":  # the conv is also read as NCHW: left as it was
            assert "Transpose" in types and not any("Transpose" in f for f in folded)
        else:  # split, sigmoid and the transposes are the op's outputs now
            assert "Transpose" not in types and "Sigmoid" not in types
            assert "VariadicSplit" not in types
            assert folded[-1] == ("Split, " if mode == "split" else "") + "Sigmoid, Transpose"
        # the output scale x * 1.0 (a copy per inference) is gone, its output name kept
        assert "Multiply" not in types
        assert [o.get_names() >= n for o, n in zip(model.outputs, names)] == [True] * len(names)
        want = _compile(ref_model)(xv)
        for threads in (1, 2):
            got = _compile(model, threads)(xv)
            assert len(got) == len(want)
            for i in range(len(want)):
                assert got[i].shape == want[i].shape
                assert_close(got[i], want[i], 1e-5)


def test_export_rejects_missing_model(tmp_path):
    from picosparse.errors import DataError
    from picosparse.steps.x86_sparse import convert
    with pytest.raises(DataError, match="no model.pdmodel"):
        convert(tmp_path, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_build_cache(tmp_path, monkeypatch, capsys):
    from picosparse.x86 import build
    monkeypatch.delenv("PICOSPARSE_CACHE_DIR", raising=False)
    monkeypatch.setenv("PICOSPARSE_CACHE", str(tmp_path))  # an empty cache: a real build
    lib = build.library_path()
    assert lib.is_file() and lib.parent.parent == tmp_path
    assert "building sparse op" in capsys.readouterr().err
    assert build.library_path() == lib
    assert "building" not in capsys.readouterr().err  # cached: no second build


@pytest.mark.slow
def test_whole_picodet_matches_dense(tmp_path):
    """Demo PicoDet, random init, 80% of each 1x1 weight zeroed: x86-sparse == dense OpenVINO."""
    import openvino as ov
    from picosparse.sparsity.random_model import export_random_picodet
    from picosparse.steps.x86_sparse import X86SparseParams, convert
    from picosparse.x86.runtime import load_model
    src = export_random_picodet("configs/demo/picodet_demo.yml", tmp_path / "dense", 160, 0.8)
    info = convert(src, X86SparseParams(), out=tmp_path / "x86")  # nchw_ops=True
    assert info["replaced"] == info["conv_1x1_total"] > 50
    assert info["sparse_weight_bytes"] < info["dense_1x1_weight_bytes"] / 2
    assert info["depthwise"] > 30  # every ESNet/CSPPAN/head depthwise conv
    meta = json.loads((tmp_path / "x86" / "x86_sparse.json").read_text())
    assert all(l["zero_fraction"] >= 0.79 for l in meta["layers"] if l["kind"] == "sparse1x1")
    stem = [l for l in meta["layers"] if l["kind"] == "conv"]
    assert info["dense_kxk"] == 1 and stem[0]["folded"][-1] == "MaxPool"  # 3x3/2 + pool fused
    gated = [l for l in meta["layers"] if "SE gate" in l.get("folded", [])]
    assert info["se_gates"] == len(gated) > 0  # ESNet's squeeze-excite multiplies folded
    # ... with their whole block (squeeze + two convs) run inside the consumer
    blocks = [l for l in gated if "SE block" in l["folded"]]
    assert len(blocks) == len(gated)
    assert sum(1 for l in meta["layers"] if l.get("fused_into")) == 2 * len(blocks)
    xml = (tmp_path / "x86" / "model.xml").read_text()
    assert 'type="ReduceMean"' not in xml
    ov_dw = convert(src, X86SparseParams(nchw_ops=False), out=tmp_path / "x86_ovdw")
    assert ov_dw["depthwise"] == ov_dw["dense_kxk"] == 0
    core = ov.Core()
    dense = core.compile_model(core.read_model(str(src / "model.pdmodel")), "CPU",
                               {"INFERENCE_PRECISION_HINT": "f32"})
    x = np.random.default_rng(5).standard_normal((1, 3, 160, 160)).astype(np.float32)
    want = [dense(x)[i] for i in range(len(dense.outputs))]
    for d, threads in (("x86", 1), ("x86", 2), ("x86_ovdw", 1), ("x86_ovdw", 2)):
        got = load_model(tmp_path / d, threads=threads)(x)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            assert_close(g, w, 1e-4)
