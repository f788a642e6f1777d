// Sparse 1x1 convolution kernels (see spconv.h for the format). One translation unit compiled
// for baseline x86-64; the AVX2 and AVX-512 kernels use function-level target attributes so the
// same library runs on any x86-64 CPU and picks its path at run time.
#include "spconv.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/partitioner.h>
#include <oneapi/tbb/task_arena.h>

namespace picosparse {

bool cpu_supports(int isa) {
    // detected once: CPUID traps to the hypervisor in a VM (measured ~25 us per kernel call
    // when this ran on every call)
    static const bool avx2 = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }();
    static const bool avx512 = [] {
        __builtin_cpu_init();
        return (bool)__builtin_cpu_supports("avx512f");
    }();
    switch (isa) {
        case ISA_PORTABLE: return true;
        case ISA_AVX2: return avx2;
        case ISA_AVX512: return avx512;
    }
    return false;
}

const char* isa_name(int isa) {
    switch (isa) {
        case ISA_PORTABLE: return "portable";
        case ISA_AVX2: return "avx2";
        case ISA_AVX512: return "avx512";
    }
    return "?";
}

int select_isa(const char** err) {
    // read on every call (a getenv is ~100 ns) so tests can switch paths inside one process
    const char* forced = std::getenv("PICOSPARSE_ISA");
    if (forced && *forced && std::strcmp(forced, "auto") != 0) {
        for (int isa : {ISA_PORTABLE, ISA_AVX2, ISA_AVX512}) {
            if (std::strcmp(forced, isa_name(isa)) == 0) {
                if (cpu_supports(isa)) return isa;
                if (err) *err = "PICOSPARSE_ISA names an ISA this CPU does not support";
                return -1;
            }
        }
        if (err) *err = "PICOSPARSE_ISA must be one of avx512, avx2, portable, auto";
        return -1;
    }
    if (cpu_supports(ISA_AVX512)) return ISA_AVX512;
    if (cpu_supports(ISA_AVX2)) return ISA_AVX2;
    return ISA_PORTABLE;
}

namespace {

// Flush-to-zero + denormals-are-zero while a kernel runs (restored after). A denormal input
// costs a ~100-cycle microcode assist per FMA: measured 100x slower on a layer whose
// activations were denormal, which random-init PicoDets produce; oneDNN's kernels do the same.
struct FlushDenormals {
    unsigned saved;
    FlushDenormals() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040u); }
    ~FlushDenormals() { _mm_setcsr(saved); }
};

// Every path first packs the x tile of a task, x[:, p0:p0+tw], into a contiguous, zero-padded
// [cin][tw] buffer: the rows of x sit hw floats apart, a stride that maps all channels of a
// tile onto a few L1 sets (measured: 3-4x slower unpacked at 80x80), and the padding lets the
// tail tile run full vectors (only its store is masked).
struct Tile {
    const float* buf;  // [cin][stride], 64-byte aligned
    int64_t stride;    // floats between channel rows (tw when packed, hw when read in place)
    int tw;            // tile width of this layer
    int np;            // valid pixels (<= tw)
};

// Reading x in place is as good as packing when channel rows are 64-byte aligned and their
// stride is an odd number of cache lines (then consecutive channels cycle through all L1 sets):
// e.g. 20x20 maps (1600 B = 25 lines), the most common size in PicoDet at 320.
bool in_place_ok(const float* x, int64_t hw) {
    const int64_t bytes = hw * 4;
    return (reinterpret_cast<uintptr_t>(x) % 64) == 0 && bytes % 64 == 0 && (bytes / 64) % 2 == 1;
}

float* tile_buffer(size_t floats) {
    thread_local float* buf = nullptr;
    thread_local size_t cap = 0;
    if (floats > cap) {
        std::free(buf);
        cap = (floats + 1023) & ~size_t(1023);
        buf = static_cast<float*>(std::aligned_alloc(64, cap * sizeof(float)));
    }
    return buf;
}

Tile pack_tile(const float* xb, int cin, int64_t hw, int64_t p0, int np, int tw) {
    float* buf = tile_buffer((size_t)cin * tw);
    for (int c = 0; c < cin; ++c) {
        std::memcpy(buf + (size_t)c * tw, xb + (int64_t)c * hw + p0, sizeof(float) * np);
        if (np < tw) std::memset(buf + (size_t)c * tw + np, 0, sizeof(float) * (tw - np));
    }
    return {buf, tw, tw, np};
}

// ---------------------------------------------------------------- portable (compiler-vectorised)
inline float act_scalar(float v, const SparseWeights& w) {
    switch (w.act) {
        case ACT_RELU: return v > 0.f ? v : 0.f;
        case ACT_HSWISH: return v * std::min(std::max(v + 3.f, 0.f), 6.f) * (1.f / 6.f);
        case ACT_HSIGMOID: return std::min(std::max(w.alpha * v + w.beta, 0.f), 1.f);
        case ACT_LEAKY: return v > 0.f ? v : w.alpha * v;
    }
    return v;
}

// GCC/Clang vector extension: 4 floats, lowered to SSE2 on baseline x86-64 (GCC left the plain
// scalar loop unvectorised after fully unrolling it).
typedef float v4f __attribute__((vector_size(16)));

template <int TW>
void rows_portable_t(const SparseWeights& w, const Tile& t, float* yb, int64_t hw, int64_t p0,
                     int r0, int r1) {
    constexpr int NV = TW / 4;
    for (int r = r0; r < r1; ++r) {
        v4f acc[NV];
        const float b = w.bias ? w.bias[r] : 0.f;
        for (int i = 0; i < NV; ++i) acc[i] = v4f{b, b, b, b};
        for (int k = w.rowptr[r], e = w.rowptr[r + 1]; k < e; ++k) {
            const float v = w.vals[k];
            const v4f vv = {v, v, v, v};
            const v4f* xr = reinterpret_cast<const v4f*>(t.buf + w.cols[k] * t.stride);
            for (int i = 0; i < NV; ++i) acc[i] += vv * xr[i];
        }
        alignas(64) float out[TW];
        std::memcpy(out, acc, sizeof(out));
        float* yr = yb + (int64_t)r * hw + p0;
        for (int p = 0; p < t.np; ++p) yr[p] = act_scalar(out[p], w);
    }
}

void rows_portable(const SparseWeights& w, const Tile& t, float* yb, int64_t hw, int64_t p0,
                   int r0, int r1) {
    switch (t.tw) {
        case 64: return rows_portable_t<64>(w, t, yb, hw, p0, r0, r1);
        case 32: return rows_portable_t<32>(w, t, yb, hw, p0, r0, r1);
        case 16: return rows_portable_t<16>(w, t, yb, hw, p0, r0, r1);
        default: return rows_portable_t<8>(w, t, yb, hw, p0, r0, r1);
    }
}

// ---------------------------------------------------------------- AVX2 + FMA
__attribute__((target("avx2,fma"))) inline __m256 act_avx2(__m256 v, const SparseWeights& w) {
    const __m256 zero = _mm256_setzero_ps();
    switch (w.act) {
        case ACT_RELU: return _mm256_max_ps(v, zero);
        case ACT_HSWISH: {
            __m256 t = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v, _mm256_set1_ps(3.f)), zero),
                                     _mm256_set1_ps(6.f));
            return _mm256_mul_ps(_mm256_mul_ps(v, t), _mm256_set1_ps(1.f / 6.f));
        }
        case ACT_HSIGMOID: {
            __m256 t = _mm256_fmadd_ps(v, _mm256_set1_ps(w.alpha), _mm256_set1_ps(w.beta));
            return _mm256_min_ps(_mm256_max_ps(t, zero), _mm256_set1_ps(1.f));
        }
        case ACT_LEAKY:
            return _mm256_add_ps(_mm256_max_ps(v, zero),
                                 _mm256_mul_ps(_mm256_set1_ps(w.alpha), _mm256_min_ps(v, zero)));
    }
    return v;
}

// NV vectors per row and U accumulator sets over consecutive nonzeros: NV*U independent FMA
// chains (8 hides the 4-cycle FMA latency on two FMA ports).
template <int NV, int U>
__attribute__((target("avx2,fma"))) void rows_avx2_t(const SparseWeights& w, const Tile& t,
                                                      float* yb, int64_t hw, int64_t p0, int r0,
                                                      int r1) {
    for (int r = r0; r < r1; ++r) {
        __m256 a[U][NV];
        for (int u = 0; u < U; ++u)
            for (int i = 0; i < NV; ++i) a[u][i] = _mm256_setzero_ps();
        int k = w.rowptr[r];
        const int e = w.rowptr[r + 1];
        for (; k + U <= e; k += U) {
            for (int u = 0; u < U; ++u) {
                const float* xu = t.buf + w.cols[k + u] * t.stride;
                const __m256 vu = _mm256_broadcast_ss(w.vals + k + u);
                for (int i = 0; i < NV; ++i)
                    a[u][i] = _mm256_fmadd_ps(vu, _mm256_load_ps(xu + 8 * i), a[u][i]);
            }
        }
        for (; k < e; ++k) {
            const float* xu = t.buf + w.cols[k] * t.stride;
            const __m256 vu = _mm256_broadcast_ss(w.vals + k);
            for (int i = 0; i < NV; ++i)
                a[0][i] = _mm256_fmadd_ps(vu, _mm256_load_ps(xu + 8 * i), a[0][i]);
        }
        const __m256 b = _mm256_set1_ps(w.bias ? w.bias[r] : 0.f);
        float* yr = yb + (int64_t)r * hw + p0;
        for (int i = 0; i < NV; ++i) {
            __m256 s = a[0][i];
            for (int u = 1; u < U; ++u) s = _mm256_add_ps(s, a[u][i]);
            const __m256 v = act_avx2(_mm256_add_ps(s, b), w);
            if (8 * (i + 1) <= t.np) _mm256_storeu_ps(yr + 8 * i, v);
            else if (8 * i < t.np) {  // the one partial vector of a tail tile
                alignas(32) int32_t lanes[8];
                for (int l = 0; l < 8; ++l) lanes[l] = 8 * i + l < t.np ? -1 : 0;
                _mm256_maskstore_ps(yr + 8 * i, _mm256_load_si256((const __m256i*)lanes), v);
            }
        }
    }
}

__attribute__((target("avx2,fma"))) void rows_avx2(const SparseWeights& w, const Tile& t,
                                                    float* yb, int64_t hw, int64_t p0, int r0,
                                                    int r1) {
    // as many vectors as the tile's valid pixels need (a 100-pixel map: 64 + 48, not 64 + 64)
    switch ((t.np + 7) / 8) {
        case 4: return rows_avx2_t<4, 2>(w, t, yb, hw, p0, r0, r1);
        case 3: return rows_avx2_t<3, 3>(w, t, yb, hw, p0, r0, r1);
        case 2: return rows_avx2_t<2, 4>(w, t, yb, hw, p0, r0, r1);
        default: return rows_avx2_t<1, 4>(w, t, yb, hw, p0, r0, r1);
    }
}

// ---------------------------------------------------------------- AVX-512
__attribute__((target("avx512f"))) inline __m512 act_avx512(__m512 v, const SparseWeights& w) {
    const __m512 zero = _mm512_setzero_ps();
    switch (w.act) {
        case ACT_RELU: return _mm512_max_ps(v, zero);
        case ACT_HSWISH: {
            __m512 t = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, _mm512_set1_ps(3.f)), zero),
                                     _mm512_set1_ps(6.f));
            return _mm512_mul_ps(_mm512_mul_ps(v, t), _mm512_set1_ps(1.f / 6.f));
        }
        case ACT_HSIGMOID: {
            __m512 t = _mm512_fmadd_ps(v, _mm512_set1_ps(w.alpha), _mm512_set1_ps(w.beta));
            return _mm512_min_ps(_mm512_max_ps(t, zero), _mm512_set1_ps(1.f));
        }
        case ACT_LEAKY:
            return _mm512_add_ps(_mm512_max_ps(v, zero),
                                 _mm512_mul_ps(_mm512_set1_ps(w.alpha), _mm512_min_ps(v, zero)));
    }
    return v;
}

template <int NV, int U>
__attribute__((target("avx512f"))) void rows_avx512_t(const SparseWeights& w, const Tile& t,
                                                       float* yb, int64_t hw, int64_t p0, int r0,
                                                       int r1) {
    for (int r = r0; r < r1; ++r) {
        __m512 a[U][NV];
        for (int u = 0; u < U; ++u)
            for (int i = 0; i < NV; ++i) a[u][i] = _mm512_setzero_ps();
        int k = w.rowptr[r];
        const int e = w.rowptr[r + 1];
        for (; k + U <= e; k += U) {
            for (int u = 0; u < U; ++u) {
                const float* xu = t.buf + w.cols[k + u] * t.stride;
                const __m512 vu = _mm512_set1_ps(w.vals[k + u]);
                for (int i = 0; i < NV; ++i)
                    a[u][i] = _mm512_fmadd_ps(vu, _mm512_load_ps(xu + 16 * i), a[u][i]);
            }
        }
        for (; k < e; ++k) {
            const float* xu = t.buf + w.cols[k] * t.stride;
            const __m512 vu = _mm512_set1_ps(w.vals[k]);
            for (int i = 0; i < NV; ++i)
                a[0][i] = _mm512_fmadd_ps(vu, _mm512_load_ps(xu + 16 * i), a[0][i]);
        }
        const __m512 b = _mm512_set1_ps(w.bias ? w.bias[r] : 0.f);
        float* yr = yb + (int64_t)r * hw + p0;
        for (int i = 0; i < NV; ++i) {
            __m512 s = a[0][i];
            for (int u = 1; u < U; ++u) s = _mm512_add_ps(s, a[u][i]);
            const __m512 v = act_avx512(_mm512_add_ps(s, b), w);
            if (16 * (i + 1) <= t.np) _mm512_storeu_ps(yr + 16 * i, v);
            else if (16 * i < t.np)  // the one partial vector of a tail tile
                _mm512_mask_storeu_ps(yr + 16 * i, (__mmask16)((1u << (t.np - 16 * i)) - 1u), v);
        }
    }
}

__attribute__((target("avx512f"))) void rows_avx512(const SparseWeights& w, const Tile& t,
                                                     float* yb, int64_t hw, int64_t p0, int r0,
                                                     int r1) {
    // as many vectors as the tile's valid pixels need (a 100-pixel map: 64 + 48, not 64 + 64)
    switch ((t.np + 15) / 16) {
        case 4: return rows_avx512_t<4, 2>(w, t, yb, hw, p0, r0, r1);
        case 3: return rows_avx512_t<3, 3>(w, t, yb, hw, p0, r0, r1);
        case 2: return rows_avx512_t<2, 4>(w, t, yb, hw, p0, r0, r1);
        default: return rows_avx512_t<1, 8>(w, t, yb, hw, p0, r0, r1);
    }
}

using RowsFn = void (*)(const SparseWeights&, const Tile&, float*, int64_t, int64_t, int, int);

// Pixel tile width: as wide as the vector registers allow while the packed [cin][tw] tile
// stays in L1 (~32 KB of the 48 KB) where possible, and no wider than the image needs.
int tile_width(int isa, int cin, int64_t hw) {
    const int vec = isa == ISA_AVX2 ? 8 : 16;
    const int maxw = isa == ISA_AVX2 ? 32 : 64;
    int tw = maxw;
    // not below 2 vectors: at 1 vector each FMA needs its own broadcast load too, which cost
    // more than the L2 hits of a 64 KB tile (measured on 512-channel 10x10 layers)
    while (tw > 2 * vec && (int64_t)cin * tw * 4 > 32 * 1024) tw /= 2;
    while (tw > vec && tw / 2 >= hw) tw /= 2;
    return tw;
}

}  // namespace

void spconv1x1(const SparseWeights& w, const float* x, float* y, int n, int64_t hw, int isa,
               int threads) {
    if (n <= 0 || hw <= 0 || w.cout <= 0) return;
    RowsFn fn = isa == ISA_AVX512 ? rows_avx512 : isa == ISA_AVX2 ? rows_avx2 : rows_portable;
    const int tw = tile_width(isa, w.cin, hw);

    const int64_t tiles = (hw + tw - 1) / tw;  // pixel tiles per image
    const bool in_place = in_place_ok(x, hw) && (w.cin * hw * 4) % 64 == 0;
    const int64_t ntiles = tiles * n;
    // One task = (image, pixel tile, chunk of rows); a thread runs a contiguous range of tasks,
    // so consecutive row chunks of one tile reuse its packed buffer when they share a thread.
    auto run = [&](int64_t t0, int64_t t1, int rchunks) {
        FlushDenormals ftz;
        int64_t packed = -1;
        Tile tile{};
        for (int64_t t = t0; t < t1; ++t) {
            const int64_t g = t / rchunks;
            const int rc = (int)(t % rchunks);
            const int64_t img = g / tiles, p0 = (g % tiles) * tw;
            const int np = (int)std::min<int64_t>(tw, hw - p0);
            if (g != packed) {
                const float* xb = x + img * (int64_t)w.cin * hw;
                if (np == tw && in_place && isa != ISA_PORTABLE)
                    tile = Tile{xb + p0, hw, tw, np};
                else
                    tile = pack_tile(xb, w.cin, hw, p0, np, tw);
                packed = g;
            }
            const int r0 = (int)((int64_t)w.cout * rc / rchunks);
            const int r1 = (int)((int64_t)w.cout * (rc + 1) / rchunks);
            fn(w, tile, y + img * (int64_t)w.cout * hw, hw, p0, r0, r1);
        }
    };

    const int nt = threads > 0 ? threads : tbb::this_task_arena::max_concurrency();
    if (nt <= 1) return run(0, ntiles, 1);
    // too few pixel tiles to feed every thread (small feature maps): also split the rows
    int rchunks = 1;
    if (ntiles < 4 * nt)
        rchunks = (int)std::max<int64_t>(1, std::min<int64_t>((4 * nt + ntiles - 1) / ntiles,
                                                              w.cout / 8));
    const int64_t total = ntiles * rchunks;
    auto body = [&] {
        tbb::parallel_for(
            tbb::blocked_range<int64_t>(0, total),
            [&](const tbb::blocked_range<int64_t>& rg) { run(rg.begin(), rg.end(), rchunks); },
            tbb::static_partitioner());
    };
    if (threads > 0 && threads != tbb::this_task_arena::max_concurrency()) {
        tbb::task_arena arena(threads);
        arena.execute(body);
    } else {
        body();
    }
}

}  // namespace picosparse

// ==================================================================== depthwise KxK convolution
namespace picosparse {
namespace {

float* dw_buffer(size_t floats) {
    thread_local float* buf = nullptr;
    thread_local size_t cap = 0;
    if (floats > cap) {
        std::free(buf);
        cap = (floats + 1023) & ~size_t(1023);
        buf = static_cast<float*>(std::aligned_alloc(64, cap * sizeof(float)));
    }
    return buf;
}

// Padded input of one channel plane. The input is copied into a zero-padded plane; for stride
// 2 its even and odd columns go to two separate planes, which turns every tap of every output
// row into a contiguous segment. Rows keep >= 64 + k floats of slack after the last one, so
// full-vector loads past a row's end stay inside the buffer (those lanes are never stored).
struct DwPlanes {
    const float* ev;  // stride 1: the padded plane; stride 2: its even columns
    const float* od;  // stride 2: odd columns
    int ws;           // row length of each plane
};

__attribute__((always_inline)) inline DwPlanes dw_prepare(const DepthwiseParams& p,
                                                          const float* x) {
    const int s = p.stride;
    const int hp = p.h + p.pad_t + p.pad_b;
    const int wp = p.w + p.pad_l + p.pad_r;
    const int ws = s == 1 ? wp : (wp + 1) / 2;
    const size_t plane = (size_t)hp * ws;
    float* buf = dw_buffer(s * plane + 2 * (size_t)wp + 128 + 64);
    float* ev = buf;
    float* od = buf + plane;
    float* tmp = buf + s * plane + 128;  // one padded row (stride 2 only)
    std::memset(buf, 0, sizeof(float) * (s * plane + 128));
    for (int yy = 0; yy < p.h; ++yy) {
        const float* xr = x + (int64_t)yy * p.w;
        const size_t row = (size_t)(yy + p.pad_t) * ws;
        if (s == 1) {
            std::memcpy(ev + row + p.pad_l, xr, sizeof(float) * p.w);
        } else {
            for (int i = 0; i < wp; ++i) tmp[i] = 0.f;
            std::memcpy(tmp + p.pad_l, xr, sizeof(float) * p.w);
            tmp[wp] = 0.f;
            for (int i = 0; i < ws; ++i) ev[row + i] = tmp[2 * i], od[row + i] = tmp[2 * i + 1];
        }
    }
    return {ev, od, ws};
}

inline const float* dw_tap(const DwPlanes& d, int s, int row, int kx) {
    return s == 1 ? d.ev + (size_t)row * d.ws + kx
                  : ((kx & 1) ? d.od : d.ev) + (size_t)row * d.ws + (kx >> 1);
}

// Portable: plain loops (compiler-vectorised), output row used as the accumulator.
void dw_plane_portable(const DepthwiseParams& p, const float* x, float* y, int ch) {
    const DwPlanes d = dw_prepare(p, x);
    const int k = p.k, s = p.stride, ho = p.out_h(), wo = p.out_w();
    const float* wk = p.wt + (size_t)ch * k * k;
    const float b = p.bias ? p.bias[ch] : 0.f;
    SparseWeights aw;  // carries the activation for act_scalar
    aw.act = p.act, aw.alpha = p.alpha, aw.beta = p.beta;
    for (int oy = 0; oy < ho; ++oy) {
        float* __restrict yr = y + (int64_t)oy * wo;
        for (int ox = 0; ox < wo; ++ox) yr[ox] = b;
        for (int ky = 0; ky < k; ++ky)
            for (int kx = 0; kx < k; ++kx) {
                const float wv = wk[ky * k + kx];
                const float* __restrict ir = dw_tap(d, s, oy * s + ky, kx);
                for (int ox = 0; ox < wo; ++ox) yr[ox] += wv * ir[ox];
            }
        for (int ox = 0; ox < wo; ++ox) yr[ox] = act_scalar(yr[ox], aw);
    }
}

// AVX-512: reads the input plane directly (no padded copy): up to 64 output pixels of a row
// sit in 4 registers across all k*k taps; a tap's out-of-image lanes are masked off in the
// load (masked lanes never fault), rows outside the image are skipped. Stride 2 loads 32
// consecutive inputs and keeps the even or odd ones with one permute.
// KC: the kernel size as a compile-time constant (3, 5: fully unrolled taps) or 0 (runtime).
template <int NV, int S, int KC>
__attribute__((target("avx512f"))) void dw_rows_avx512(const DepthwiseParams& p, const float* x,
                                                        float* y, const float* wk, float b,
                                                        int x0, int nx) {
    const int k = KC ? KC : p.k, ho = p.out_h(), wo = p.out_w(), w = p.w;
    SparseWeights aw;
    aw.act = p.act, aw.alpha = p.alpha, aw.beta = p.beta;
    // per (kx, vector): first input column and the in-image lanes (of 16, or of 2x16)
    int c0[8][NV];
    __mmask16 mlo[8][NV], mhi[8][NV];
    auto lanes = [w](int first) -> __mmask16 {  // lanes l with 0 <= first + l < w
        const int lo = std::max(0, -first), hi = std::min(16, w - first);
        if (hi <= lo) return 0;
        return (__mmask16)((((1u << hi) - 1u)) & ~((1u << lo) - 1u));
    };
    for (int kx = 0; kx < k; ++kx)
        for (int i = 0; i < NV; ++i) {
            const int c = S * (x0 + 16 * i) + kx - p.pad_l;
            c0[kx][i] = c;
            mlo[kx][i] = lanes(c);
            mhi[kx][i] = S == 2 ? lanes(c + 16) : 0;
        }
    const __m512i even =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    // R output rows at once: R*NV independent accumulators hide the 4-cycle FMA latency
    // (one row of a 40-wide map is only 3 vectors: latency-bound). Input rows outside the
    // image read a zero row instead of branching.
    constexpr int R = NV >= 4 ? 2 : NV == 3 ? 3 : NV == 2 ? 4 : 8;
    thread_local float* zero_row = nullptr;
    thread_local int zero_len = 0;
    if (zero_len < w + 160) {
        std::free(zero_row);
        zero_len = w + 160;
        zero_row = static_cast<float*>(std::calloc((size_t)zero_len, sizeof(float)));
    }
    const float* zrow = zero_row + 64;  // masked-off lanes may point up to pad_l before it
    for (int oy0 = 0; oy0 < ho; oy0 += R) {
        const int nr = std::min(R, ho - oy0);
        __m512 acc[R][NV];
        for (int r = 0; r < R; ++r)
            for (int i = 0; i < NV; ++i) acc[r][i] = _mm512_set1_ps(b);
        for (int ky = 0; ky < k; ++ky) {
            const float* rows[R];
            for (int r = 0; r < R; ++r) {
                const int iy = (oy0 + r) * S + ky - p.pad_t;
                rows[r] = (r < nr && iy >= 0 && iy < p.h) ? x + (int64_t)iy * w : zrow;
            }
            for (int kx = 0; kx < k; ++kx) {
                const __m512 wv = _mm512_set1_ps(wk[ky * k + kx]);
                for (int r = 0; r < R; ++r)
                    for (int i = 0; i < NV; ++i) {
                        const float* src = rows[r] + c0[kx][i];
                        __m512 v = _mm512_maskz_loadu_ps(mlo[kx][i], src);
                        if (S == 2)
                            v = _mm512_permutex2var_ps(
                                v, even, _mm512_maskz_loadu_ps(mhi[kx][i], src + 16));
                        acc[r][i] = _mm512_fmadd_ps(wv, v, acc[r][i]);
                    }
            }
        }
        for (int r = 0; r < nr; ++r) {
            float* yr = y + (int64_t)(oy0 + r) * wo + x0;
            for (int i = 0; i < NV; ++i) {
                const __m512 v = act_avx512(acc[r][i], aw);
                const int left = nx - 16 * i;
                if (left >= 16) _mm512_storeu_ps(yr + 16 * i, v);
                else if (left > 0)
                    _mm512_mask_storeu_ps(yr + 16 * i, (__mmask16)((1u << left) - 1u), v);
            }
        }
    }
}

template <int S, int KC>
__attribute__((target("avx512f"))) void dw_plane_avx512_s(const DepthwiseParams& p,
                                                           const float* x, float* y, int ch) {
    const float* wk = p.wt + (size_t)ch * p.k * p.k;
    const float b = p.bias ? p.bias[ch] : 0.f;
    const int wo = p.out_w();
    for (int x0 = 0; x0 < wo; x0 += 64) {
        const int nx = std::min(64, wo - x0);
        switch ((nx + 15) / 16) {
            case 1: dw_rows_avx512<1, S, KC>(p, x, y, wk, b, x0, nx); break;
            case 2: dw_rows_avx512<2, S, KC>(p, x, y, wk, b, x0, nx); break;
            case 3: dw_rows_avx512<3, S, KC>(p, x, y, wk, b, x0, nx); break;
            default: dw_rows_avx512<4, S, KC>(p, x, y, wk, b, x0, nx); break;
        }
    }
}

void dw_plane_avx512(const DepthwiseParams& p, const float* x, float* y, int ch) {
    if (p.k > 8 || p.stride > 2) return dw_plane_portable(p, x, y, ch);
    if (p.stride == 2) {
        if (p.k == 3) return dw_plane_avx512_s<2, 3>(p, x, y, ch);
        if (p.k == 5) return dw_plane_avx512_s<2, 5>(p, x, y, ch);
        return dw_plane_avx512_s<2, 0>(p, x, y, ch);
    }
    if (p.k == 3) return dw_plane_avx512_s<1, 3>(p, x, y, ch);
    if (p.k == 5) return dw_plane_avx512_s<1, 5>(p, x, y, ch);
    return dw_plane_avx512_s<1, 0>(p, x, y, ch);
}

// AVX2: up to 32 output pixels of a row in 4 registers.
template <int NV>
__attribute__((target("avx2,fma"))) void dw_rows_avx2(const DepthwiseParams& p, const DwPlanes& d,
                                                      float* y, const float* wk, float b, int x0,
                                                      int nx) {
    const int k = p.k, s = p.stride, ho = p.out_h(), wo = p.out_w();
    SparseWeights aw;
    aw.act = p.act, aw.alpha = p.alpha, aw.beta = p.beta;
    for (int oy = 0; oy < ho; ++oy) {
        __m256 acc[NV];
        for (int i = 0; i < NV; ++i) acc[i] = _mm256_set1_ps(b);
        for (int ky = 0; ky < k; ++ky)
            for (int kx = 0; kx < k; ++kx) {
                const __m256 wv = _mm256_set1_ps(wk[ky * k + kx]);
                const float* ir = dw_tap(d, s, oy * s + ky, kx) + x0;
                for (int i = 0; i < NV; ++i)
                    acc[i] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(ir + 8 * i), acc[i]);
            }
        float* yr = y + (int64_t)oy * wo + x0;
        for (int i = 0; i < NV; ++i) {
            const __m256 v = act_avx2(acc[i], aw);
            const int left = nx - 8 * i;
            if (left >= 8) {
                _mm256_storeu_ps(yr + 8 * i, v);
            } else if (left > 0) {
                alignas(32) int32_t lanes[8];
                for (int l = 0; l < 8; ++l) lanes[l] = l < left ? -1 : 0;
                _mm256_maskstore_ps(yr + 8 * i, _mm256_load_si256((const __m256i*)lanes), v);
            }
        }
    }
}

__attribute__((target("avx2,fma"))) void dw_plane_avx2(const DepthwiseParams& p, const float* x,
                                                        float* y, int ch) {
    const DwPlanes d = dw_prepare(p, x);
    const float* wk = p.wt + (size_t)ch * p.k * p.k;
    const float b = p.bias ? p.bias[ch] : 0.f;
    const int wo = p.out_w();
    for (int x0 = 0; x0 < wo; x0 += 32) {
        const int nx = std::min(32, wo - x0);
        switch ((nx + 7) / 8) {
            case 1: dw_rows_avx2<1>(p, d, y, wk, b, x0, nx); break;
            case 2: dw_rows_avx2<2>(p, d, y, wk, b, x0, nx); break;
            case 3: dw_rows_avx2<3>(p, d, y, wk, b, x0, nx); break;
            default: dw_rows_avx2<4>(p, d, y, wk, b, x0, nx); break;
        }
    }
}

using DwPlaneFn = void (*)(const DepthwiseParams&, const float*, float*, int);

}  // namespace

void dwconv(const DepthwiseParams& p, const float* x, float* y, int n, int isa, int threads) {
    DwPlaneFn plane = isa == ISA_AVX512 ? dw_plane_avx512
                      : isa == ISA_AVX2  ? dw_plane_avx2
                                         : dw_plane_portable;
    const int64_t planes = (int64_t)n * p.c;
    if (planes <= 0) return;
    const int64_t in_sz = (int64_t)p.h * p.w, out_sz = (int64_t)p.out_h() * p.out_w();
    auto fn = [&](const DepthwiseParams&, const float*, float*, int64_t i0, int64_t i1) {
        FlushDenormals ftz;
        for (int64_t i = i0; i < i1; ++i) plane(p, x + i * in_sz, y + i * out_sz, (int)(i % p.c));
    };
    const int nt = threads > 0 ? threads : tbb::this_task_arena::max_concurrency();
    if (nt <= 1) return fn(p, x, y, 0, planes);
    auto body = [&] {
        tbb::parallel_for(
            tbb::blocked_range<int64_t>(0, planes),
            [&](const tbb::blocked_range<int64_t>& rg) { fn(p, x, y, rg.begin(), rg.end()); },
            tbb::static_partitioner());
    };
    if (threads > 0 && threads != tbb::this_task_arena::max_concurrency()) {
        tbb::task_arena arena(threads);
        arena.execute(body);
    } else {
        body();
    }
}

}  // namespace picosparse
