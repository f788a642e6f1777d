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
    __builtin_cpu_init();
    switch (isa) {
        case ISA_PORTABLE: return true;
        case ISA_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        case ISA_AVX512: return __builtin_cpu_supports("avx512f");
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

// ---------------------------------------------------------------- portable (compiler-vectorised)
constexpr int TW_PORTABLE = 64;

inline float act_scalar(float v, const SparseWeights& w) {
    switch (w.act) {
        case ACT_RELU: return v > 0.f ? v : 0.f;
        case ACT_HSWISH: return v * std::min(std::max(v + 3.f, 0.f), 6.f) * (1.f / 6.f);
        case ACT_HSIGMOID: return std::min(std::max(w.alpha * v + w.beta, 0.f), 1.f);
        case ACT_LEAKY: return v > 0.f ? v : w.alpha * v;
    }
    return v;
}

void rows_portable(const SparseWeights& w, const float* xp, float* yb, int64_t hw, int64_t p0,
                   int np, int r0, int r1) {
    alignas(64) float acc[TW_PORTABLE];
    for (int r = r0; r < r1; ++r) {
        const float b = w.bias ? w.bias[r] : 0.f;
        for (int p = 0; p < np; ++p) acc[p] = b;
        for (int k = w.rowptr[r], e = w.rowptr[r + 1]; k < e; ++k) {
            const float v = w.vals[k];
            const float* xr = xp + (int64_t)w.cols[k] * hw;
            for (int p = 0; p < np; ++p) acc[p] += v * xr[p];
        }
        float* yr = yb + (int64_t)r * hw + p0;
        for (int p = 0; p < np; ++p) yr[p] = act_scalar(acc[p], w);
    }
}

// ---------------------------------------------------------------- AVX2 + FMA: 32-pixel tiles
constexpr int TW_AVX2 = 32;

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

// NV ymm vectors per row; the last one is loaded/stored under `m` unless FULL.
template <int NV, bool FULL>
__attribute__((target("avx2,fma"))) void rows_avx2_t(const SparseWeights& w, const float* xp,
                                                      float* yb, int64_t hw, int64_t p0, int r0,
                                                      int r1, __m256i m) {
    for (int r = r0; r < r1; ++r) {
        // two accumulator sets over alternating nonzeros: 2*NV independent FMA chains
        __m256 a[NV], c[NV];
        for (int i = 0; i < NV; ++i) a[i] = c[i] = _mm256_setzero_ps();
        int k = w.rowptr[r];
        const int e = w.rowptr[r + 1];
        for (; k + 1 < e; k += 2) {
            const float* xa = xp + (int64_t)w.cols[k] * hw;
            const float* xc = xp + (int64_t)w.cols[k + 1] * hw;
            const __m256 va = _mm256_broadcast_ss(w.vals + k);
            const __m256 vc = _mm256_broadcast_ss(w.vals + k + 1);
            for (int i = 0; i < NV; ++i) {
                const bool full = FULL || i < NV - 1;
                __m256 xa_i = full ? _mm256_loadu_ps(xa + 8 * i) : _mm256_maskload_ps(xa + 8 * i, m);
                __m256 xc_i = full ? _mm256_loadu_ps(xc + 8 * i) : _mm256_maskload_ps(xc + 8 * i, m);
                a[i] = _mm256_fmadd_ps(va, xa_i, a[i]);
                c[i] = _mm256_fmadd_ps(vc, xc_i, c[i]);
            }
        }
        if (k < e) {
            const float* xa = xp + (int64_t)w.cols[k] * hw;
            const __m256 va = _mm256_broadcast_ss(w.vals + k);
            for (int i = 0; i < NV; ++i) {
                const bool full = FULL || i < NV - 1;
                __m256 xa_i = full ? _mm256_loadu_ps(xa + 8 * i) : _mm256_maskload_ps(xa + 8 * i, m);
                a[i] = _mm256_fmadd_ps(va, xa_i, a[i]);
            }
        }
        const __m256 b = _mm256_set1_ps(w.bias ? w.bias[r] : 0.f);
        float* yr = yb + (int64_t)r * hw + p0;
        for (int i = 0; i < NV; ++i) {
            __m256 v = act_avx2(_mm256_add_ps(_mm256_add_ps(a[i], c[i]), b), w);
            if (FULL || i < NV - 1) _mm256_storeu_ps(yr + 8 * i, v);
            else _mm256_maskstore_ps(yr + 8 * i, m, v);
        }
    }
}

__attribute__((target("avx2,fma"))) void rows_avx2(const SparseWeights& w, const float* xp,
                                                    float* yb, int64_t hw, int64_t p0, int np,
                                                    int r0, int r1) {
    if (np == TW_AVX2) return rows_avx2_t<4, true>(w, xp, yb, hw, p0, r0, r1, __m256i());
    const int nv = (np + 7) / 8, tail = np - 8 * (nv - 1);
    alignas(32) int32_t lanes[8];
    for (int i = 0; i < 8; ++i) lanes[i] = i < tail ? -1 : 0;
    const __m256i m = _mm256_load_si256(reinterpret_cast<const __m256i*>(lanes));
    switch (nv) {
        case 1: return rows_avx2_t<1, false>(w, xp, yb, hw, p0, r0, r1, m);
        case 2: return rows_avx2_t<2, false>(w, xp, yb, hw, p0, r0, r1, m);
        case 3: return rows_avx2_t<3, false>(w, xp, yb, hw, p0, r0, r1, m);
        default: return rows_avx2_t<4, false>(w, xp, yb, hw, p0, r0, r1, m);
    }
}

// ---------------------------------------------------------------- AVX-512: 64-pixel tiles
constexpr int TW_AVX512 = 64;

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

template <int NV, bool FULL>
__attribute__((target("avx512f"))) void rows_avx512_t(const SparseWeights& w, const float* xp,
                                                       float* yb, int64_t hw, int64_t p0, int r0,
                                                       int r1, __mmask16 m) {
    for (int r = r0; r < r1; ++r) {
        // two accumulator sets over alternating nonzeros: 2*NV independent FMA chains
        __m512 a[NV], c[NV];
        for (int i = 0; i < NV; ++i) a[i] = c[i] = _mm512_setzero_ps();
        int k = w.rowptr[r];
        const int e = w.rowptr[r + 1];
        for (; k + 1 < e; k += 2) {
            const float* xa = xp + (int64_t)w.cols[k] * hw;
            const float* xc = xp + (int64_t)w.cols[k + 1] * hw;
            const __m512 va = _mm512_set1_ps(w.vals[k]);
            const __m512 vc = _mm512_set1_ps(w.vals[k + 1]);
            for (int i = 0; i < NV; ++i) {
                const bool full = FULL || i < NV - 1;
                __m512 xa_i = full ? _mm512_loadu_ps(xa + 16 * i) : _mm512_maskz_loadu_ps(m, xa + 16 * i);
                __m512 xc_i = full ? _mm512_loadu_ps(xc + 16 * i) : _mm512_maskz_loadu_ps(m, xc + 16 * i);
                a[i] = _mm512_fmadd_ps(va, xa_i, a[i]);
                c[i] = _mm512_fmadd_ps(vc, xc_i, c[i]);
            }
        }
        if (k < e) {
            const float* xa = xp + (int64_t)w.cols[k] * hw;
            const __m512 va = _mm512_set1_ps(w.vals[k]);
            for (int i = 0; i < NV; ++i) {
                const bool full = FULL || i < NV - 1;
                __m512 xa_i = full ? _mm512_loadu_ps(xa + 16 * i) : _mm512_maskz_loadu_ps(m, xa + 16 * i);
                a[i] = _mm512_fmadd_ps(va, xa_i, a[i]);
            }
        }
        const __m512 b = _mm512_set1_ps(w.bias ? w.bias[r] : 0.f);
        float* yr = yb + (int64_t)r * hw + p0;
        for (int i = 0; i < NV; ++i) {
            __m512 v = act_avx512(_mm512_add_ps(_mm512_add_ps(a[i], c[i]), b), w);
            if (FULL || i < NV - 1) _mm512_storeu_ps(yr + 16 * i, v);
            else _mm512_mask_storeu_ps(yr + 16 * i, m, v);
        }
    }
}

__attribute__((target("avx512f"))) void rows_avx512(const SparseWeights& w, const float* xp,
                                                     float* yb, int64_t hw, int64_t p0, int np,
                                                     int r0, int r1) {
    if (np == TW_AVX512) return rows_avx512_t<4, true>(w, xp, yb, hw, p0, r0, r1, 0xFFFF);
    const int nv = (np + 15) / 16, tail = np - 16 * (nv - 1);
    const __mmask16 m = (__mmask16)((1u << tail) - 1u);
    switch (nv) {
        case 1: return rows_avx512_t<1, false>(w, xp, yb, hw, p0, r0, r1, m);
        case 2: return rows_avx512_t<2, false>(w, xp, yb, hw, p0, r0, r1, m);
        case 3: return rows_avx512_t<3, false>(w, xp, yb, hw, p0, r0, r1, m);
        default: return rows_avx512_t<4, false>(w, xp, yb, hw, p0, r0, r1, m);
    }
}

using RowsFn = void (*)(const SparseWeights&, const float*, float*, int64_t, int64_t, int, int,
                        int);

}  // namespace

void spconv1x1(const SparseWeights& w, const float* x, float* y, int n, int64_t hw, int isa,
               int threads) {
    RowsFn fn = rows_portable;
    int tw = TW_PORTABLE;
    if (isa == ISA_AVX512) fn = rows_avx512, tw = TW_AVX512;
    else if (isa == ISA_AVX2) fn = rows_avx2, tw = TW_AVX2;
    if (n <= 0 || hw <= 0 || w.cout <= 0) return;

    const int64_t tiles = (hw + tw - 1) / tw;  // pixel tiles per image
    const int64_t ntiles = tiles * n;
    // One task = (image, pixel tile, chunk of rows). Pixel tiles first: the x tile is re-read by
    // every row, so tasks sharing a tile stay on one thread (contiguous static ranges).
    auto run = [&](int64_t t0, int64_t t1, int rchunks) {
        for (int64_t t = t0; t < t1; ++t) {
            const int64_t tile = t / rchunks;
            const int rc = (int)(t % rchunks);
            const int64_t img = tile / tiles, p0 = (tile % tiles) * tw;
            const int np = (int)std::min<int64_t>(tw, hw - p0);
            const int r0 = (int)((int64_t)w.cout * rc / rchunks);
            const int r1 = (int)((int64_t)w.cout * (rc + 1) / rchunks);
            const float* xb = x + img * (int64_t)w.cin * hw;
            float* yb = y + img * (int64_t)w.cout * hw;
            fn(w, xb + p0, yb, hw, p0, np, r0, r1);
        }
    };

    int nt = threads > 0 ? threads : tbb::this_task_arena::max_concurrency();
    if (nt <= 1) return run(0, ntiles, 1);
    // too few pixel tiles to feed every thread (small feature maps): also split the rows
    int rchunks = 1;
    if (ntiles < 4 * nt) rchunks = (int)std::min<int64_t>((4 * nt + ntiles - 1) / ntiles, std::max(1, w.cout / 8));
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
