"""Python side of the kernels: the sparse weight format and direct (ctypes) calls.

The direct calls exist for tests and per-kernel benchmarks; deployed models reach the same
kernels through the OpenVINO ops (picosparse.x86.convert, picosparse.x86.runtime).
"""

import ctypes
from dataclasses import dataclass

import numpy as np

from picosparse.errors import PicosparseError

ISAS = {"portable": 0, "avx2": 1, "avx512": 2}
_LIB = None


@dataclass
class SparseWeights:
    """Row-CSR weights of a 1x1 conv: output row r uses cols/vals[rowptr[r]:rowptr[r+1]].

    cols/vals carry one trailing padding entry (so an all-zero weight is a non-empty array).
    """

    rowptr: np.ndarray  # int32 [cout + 1]
    cols: np.ndarray  # int32 [nnz + 1]
    vals: np.ndarray  # float32 [nnz + 1]
    bias: np.ndarray  # float32 [cout]
    cin: int

    @property
    def cout(self):
        return len(self.bias)

    @property
    def nnz(self):
        return int(self.rowptr[-1])

    def nbytes(self):
        return self.rowptr.nbytes + self.cols.nbytes + self.vals.nbytes + self.bias.nbytes

    def segment(self):
        """int32 [rowptr, cols, vals, bias] (floats as their bits): this conv's part of the
        OpenVINO op's one weights input."""
        return np.concatenate([self.rowptr, self.cols, self.vals.view(np.int32),
                               self.bias.view(np.int32)])


def pack(weight, bias=None):
    """Pack a dense [Cout, Cin] (or [Cout, Cin, 1, 1]) fp32 weight; exact zeros are dropped."""
    w = np.asarray(weight, dtype=np.float32)
    if w.ndim == 4:
        w = w.reshape(w.shape[0], w.shape[1])
    if w.ndim != 2:
        raise ValueError(f"expected a [Cout, Cin] weight, got shape {w.shape}")
    cout, cin = w.shape
    nz = w != 0
    rowptr = np.zeros(cout + 1, np.int32)
    np.cumsum(nz.sum(axis=1), out=rowptr[1:])
    rows, cols = np.nonzero(nz)  # row-major order: each row's columns ascending
    cols = np.append(cols.astype(np.int32), np.int32(0))
    vals = np.append(w[rows, cols[:-1]], np.float32(0)).astype(np.float32)
    b = np.zeros(cout, np.float32) if bias is None else np.asarray(bias, np.float32).reshape(cout)
    return SparseWeights(rowptr, np.ascontiguousarray(cols), np.ascontiguousarray(vals),
                         np.ascontiguousarray(b), cin)


def _lib():
    global _LIB
    if _LIB is None:
        from picosparse.x86.build import library_path
        import openvino  # noqa: F401  (loads libopenvino/libtbb the library links against)
        lib = ctypes.CDLL(str(library_path()))
        f32p, i32p = ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int32)
        lib.ps_spconv1x1.restype = ctypes.c_int
        lib.ps_spconv1x1.argtypes = [i32p, i32p, f32p, f32p, ctypes.c_int, ctypes.c_int,
                                     ctypes.c_int, ctypes.c_float, ctypes.c_float, f32p, f32p,
                                     f32p, ctypes.c_int, ctypes.c_int64, ctypes.c_int,
                                     ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.ps_conv2d.restype = ctypes.c_int
        lib.ps_conv2d.argtypes = [f32p, f32p] + [ctypes.c_int] * 7 + [
            ctypes.POINTER(ctypes.c_int), ctypes.c_int, ctypes.c_float, ctypes.c_float,
            ctypes.POINTER(ctypes.c_int), f32p, f32p, ctypes.c_int, ctypes.c_int,
            ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.ps_select_isa.restype = ctypes.c_int
        lib.ps_cpu_supports.restype = ctypes.c_int
        lib.ps_cpu_supports.argtypes = [ctypes.c_int]
        lib.ps_bf16_runs.restype = ctypes.c_int
        lib.ps_activation_code.restype = ctypes.c_int
        lib.ps_activation_code.argtypes = [ctypes.c_char_p]
        _LIB = lib
    return _LIB


def activation_code(name):
    """The kernels' code for an activation name (their table: kernels/activation.h)."""
    code = _lib().ps_activation_code(str(name).encode())
    if code < 0:
        raise ValueError(f"unknown activation {name!r}")
    return code


def supported_isas():
    """ISA paths this CPU can run, best first (each can be forced with PICOSPARSE_ISA)."""
    lib = _lib()
    return [name for name, code in sorted(ISAS.items(), key=lambda kv: -kv[1])
            if lib.ps_cpu_supports(code)]


def bf16_supported():
    """True if the BF16 sparse kernel runs here: AVX512-BF16, and the AVX-512 path selected
    (PICOSPARSE_ISA=avx2 turns it off, as on a CPU without it)."""
    selected_isa()  # an invalid PICOSPARSE_ISA is an error, not "no"
    return bool(_lib().ps_bf16_runs())


def selected_isa():
    """The path the kernel will take now (PICOSPARSE_ISA honoured); error if it is invalid."""
    code = _lib().ps_select_isa()
    if code < 0:
        raise PicosparseError("PICOSPARSE_ISA is invalid or names an ISA this CPU lacks "
                              f"(supported: {', '.join(supported_isas())})")
    return {v: k for k, v in ISAS.items()}[code]


VECTOR_WIDTH = {"portable": 4, "avx2": 8, "avx512": 16}


def to_blocked(x, b):
    """NCHW array -> the same values in the blocked layout [N, C/b, H*W, b] (kernels/api.h),
    returned with x's shape (what the ops see)."""
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.reshape(n, c // b, b, h * w).transpose(0, 1, 3, 2)).reshape(
        n, c, h, w)


def from_blocked(y, b):
    """Inverse of to_blocked."""
    n, c, h, w = y.shape
    return np.ascontiguousarray(y.reshape(n, c // b, h * w, b).transpose(0, 1, 3, 2)).reshape(
        n, c, h, w)


def _layout(blocked_in, blocked_out):
    """(layout code, block width): the C API's layout bits for the ISA that will run."""
    b = VECTOR_WIDTH[selected_isa()] if blocked_in or blocked_out else 1
    return int(blocked_in) | (int(blocked_out) << 1), b


def spconv1x1(x, w, act="none", alpha=0.0, beta=0.0, threads=1, out=None, gate=None,
              blocked_in=False, blocked_out=False, bf16=False):
    """y = act(W (x * gate) + b) for NCHW fp32 x; gate: None or per-image channel gains
    [N, Cin] (or [N, Cin, 1, 1]). blocked_in / blocked_out: the op reads / writes the blocked
    layout (x and y stay NCHW here; converted around the call). bf16: the BF16 kernel where it
    runs (bf16_supported()), else fp32. Returns (y, isa name used)."""
    layout, b = _layout(blocked_in, blocked_out)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if blocked_in and x.ndim == 4 and x.shape[1] % b == 0:
        x = to_blocked(x, b)
    if x.ndim != 4 or x.shape[1] != w.cin:
        raise ValueError(f"x must be [N, {w.cin}, H, W], got {x.shape}")
    n, _, h, wd = x.shape
    f32p, i32p = ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int32)
    g = None
    if gate is not None:
        g = np.ascontiguousarray(gate, dtype=np.float32)
        if g.size != n * w.cin:
            raise ValueError(f"gate must have N x Cin = {n * w.cin} values, got {g.shape}")
    y = out if out is not None else np.empty((n, w.cout, h, wd), np.float32)
    err = ctypes.create_string_buffer(256)
    code = _lib().ps_spconv1x1(
        w.rowptr.ctypes.data_as(i32p), w.cols.ctypes.data_as(i32p),
        w.vals.ctypes.data_as(f32p), w.bias.ctypes.data_as(f32p), w.cout, w.cin,
        activation_code(act), alpha, beta, None if g is None else g.ctypes.data_as(f32p), x.ctypes.data_as(f32p),
        y.ctypes.data_as(f32p), n, h * wd, threads, layout, int(bool(bf16)), err, len(err))
    if code < 0:
        raise PicosparseError(f"sparse op: {err.value.decode()}")
    return (from_blocked(y, b) if blocked_out else y), {v: k for k, v in ISAS.items()}[code]


def conv2d(x, weight, bias=None, stride=1, pads=(0, 0, 0, 0), groups=1, act="none", alpha=0.0,
           beta=0.0, threads=1, pool=None, blocked_in=False, blocked_out=False, bf16=False):
    """Direct KxK conv of NCHW fp32 x with weight [Cout, Cin/groups, K, K] (depthwise: groups =
    Cin = Cout, weight [C, 1, K, K] or [C, K, K]); pads = (top, left, bottom, right); pool =
    None or (k, stride, pad top, left, bottom, right) of a max pool after the activation;
    blocked_in / blocked_out as in spconv1x1 (depthwise only); bf16: BF16 where the op has it
    (depthwise convs on NCHW maps, small dense convs) and the CPU runs it (bf16_supported()),
    else fp32. Returns (y, isa name used)."""
    layout, blk = _layout(blocked_in, blocked_out)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if blocked_in and x.ndim == 4 and x.shape[1] % blk == 0:
        x = to_blocked(x, blk)
    n, cin, h, w = x.shape
    wt = np.asarray(weight, np.float32)
    if wt.ndim == 3:
        wt = wt[:, None]
    wt = np.ascontiguousarray(wt)
    cout, k = wt.shape[0], wt.shape[-1]
    if cin % groups or cout % groups or wt.shape[1] * groups != cin:
        raise ValueError(f"weight {wt.shape} does not fit x {x.shape} with groups={groups}")
    b = np.zeros(cout, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32)
    ho = (h + pads[0] + pads[2] - k) // stride + 1
    wo = (w + pads[1] + pads[3] - k) // stride + 1
    if pool is not None:
        ho = (ho + pool[2] + pool[4] - pool[0]) // pool[1] + 1
        wo = (wo + pool[3] + pool[5] - pool[0]) // pool[1] + 1
    y = np.empty((n, cout, ho, wo), np.float32)
    f32p = ctypes.POINTER(ctypes.c_float)
    pd = (ctypes.c_int * 4)(*pads)
    pl = (ctypes.c_int * 6)(*pool) if pool is not None else None
    err = ctypes.create_string_buffer(256)
    code = _lib().ps_conv2d(wt.ctypes.data_as(f32p), b.ctypes.data_as(f32p), cin, cout, groups,
                            h, w, k, stride, pd, activation_code(act), alpha, beta, pl,
                            x.ctypes.data_as(f32p), y.ctypes.data_as(f32p), n, threads, layout,
                            int(bool(bf16)), err, len(err))
    if code < 0:
        raise PicosparseError(f"conv op: {err.value.decode()}")
    return (from_blocked(y, blk) if blocked_out else y), {v: k for k, v in ISAS.items()}[code]
