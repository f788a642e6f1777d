// conv2d's per-row GEMM (the 3-channel stem) in BF16, called where ConvParams::bf16 asks and the
// CPU has AVX512-BF16: one vdpbf16ps multiplies 16 outputs' inputs at two taps by a broadcast
// pair of weights, so a 3x3 stem takes 14 instructions per 16 outputs and channel instead of 27
// FMAs. The im2col patch is conv2d's (fp32); it is paired here. Inputs and weights are rounded
// to bf16, sums are fp32.
#include <algorithm>

#include "api.h"
#include "bf16.h"
#include "simd.h"

namespace picosparse {
namespace convbf16 {
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512bf16,avx2,fma")
using V = VAvx512;
#include "activate.inc"

// a's and b's 16 values as 16 bf16 pairs (a[i], b[i])
static inline __m512i pairs_of(__m512 a, __m512 b, __m512i perm) {
    return _mm512_permutexvar_epi16(perm, (__m512i)_mm512_cvtne2ps_pbh(b, a));
}

static inline __m512i interleave_halves() {
    alignas(64) int16_t idx[32];
    for (int j = 0; j < 32; ++j) idx[j] = (int16_t)((j & 1) ? 16 + j / 2 : j / 2);
    return _mm512_load_si512(idx);
}

constexpr int kGemmOcb = 6;  // output channels per register block: 6 x 4 accumulators

template <int OCB, int NV>
static inline void gemm_chunk(const uint32_t* patch, int npairs, const uint32_t* wp,
                              const float* bias, float* yr, int64_t out_hw, int left,
                              const Activation& a) {
    __m512 acc[OCB][NV];
    for (int o = 0; o < OCB; ++o) {
        const __m512 b = _mm512_set1_ps(bias ? bias[o] : 0.f);
        for (int v = 0; v < NV; ++v) acc[o][v] = b;
    }
    for (int m = 0; m < npairs; ++m) {
        __m512bh xv[NV];
        for (int v = 0; v < NV; ++v)
            xv[v] = (__m512bh)_mm512_load_si512(patch + (m * NV + v) * 16);
        for (int o = 0; o < OCB; ++o) {
            const __m512bh w = (__m512bh)_mm512_set1_epi32((int)wp[o * npairs + m]);
            for (int v = 0; v < NV; ++v) acc[o][v] = _mm512_dpbf16_ps(acc[o][v], xv[v], w);
        }
    }
    for (int o = 0; o < OCB; ++o)
        for (int v = 0; v < NV; ++v) {
            const int n = left - v * 16;
            const __m512 out = activate(acc[o][v], a);
            if (n >= 16) _mm512_storeu_ps(yr + o * out_hw + v * 16, out);
            else if (n > 0) V::store_n(yr + o * out_hw + v * 16, out, n);
        }
}

template <int OCB, int NV>  // gemm_chunk<n, NV> for a run-time n <= OCB
static inline void gemm_chunk_upto(int n, const uint32_t* patch, int npairs, const uint32_t* wp,
                                   const float* bias, float* yr, int64_t out_hw, int left,
                                   const Activation& a) {
    if (n == OCB) return gemm_chunk<OCB, NV>(patch, npairs, wp, bias, yr, out_hw, left, a);
    if constexpr (OCB > 1)
        gemm_chunk_upto<OCB - 1, NV>(n, patch, npairs, wp, bias, yr, out_hw, left, a);
}

template <int NV>
static void gemm_patch_nv(const ConvParams& p, const float* patch, float* yr, int64_t out_hw,
                          int left, const Activation& a) {
    const int ntaps = p.cin * p.k * p.k, npairs = (ntaps + 1) / 2;
    const __m512i perm = interleave_halves();
    auto* pairs = reinterpret_cast<uint32_t*>(scratch<14>((size_t)npairs * NV * 16));
    for (int m = 0; m < npairs; ++m)
        for (int v = 0; v < NV; ++v) {
            const __m512 t0 = _mm512_load_ps(patch + (2 * m * NV + v) * 16);
            const __m512 t1 = 2 * m + 1 < ntaps
                                  ? _mm512_load_ps(patch + ((2 * m + 1) * NV + v) * 16)
                                  : _mm512_setzero_ps();
            _mm512_store_si512(pairs + (m * NV + v) * 16, pairs_of(t0, t1, perm));
        }
    const uint32_t* wp = p.wt_pairs;
    int oc = 0;
    for (; oc + kGemmOcb <= p.cout; oc += kGemmOcb)
        gemm_chunk<kGemmOcb, NV>(pairs, npairs, wp + (int64_t)oc * npairs,
                                 p.bias ? p.bias + oc : nullptr, yr + oc * out_hw, out_hw, left, a);
    if (oc < p.cout)  // the last 1-5 channels in one block
        gemm_chunk_upto<kGemmOcb - 1, NV>(p.cout - oc, pairs, npairs, wp + (int64_t)oc * npairs,
                                          p.bias ? p.bias + oc : nullptr, yr + oc * out_hw,
                                          out_hw, left, a);
}
#pragma GCC pop_options
}  // namespace convbf16

void bf16_gemm_patch(const ConvParams& p, const float* patch, int nv, float* yr, int64_t out_hw,
                     int left, const Activation& a) {
    switch (nv) {
        case 4: return convbf16::gemm_patch_nv<4>(p, patch, yr, out_hw, left, a);
        case 3: return convbf16::gemm_patch_nv<3>(p, patch, yr, out_hw, left, a);
        case 2: return convbf16::gemm_patch_nv<2>(p, patch, yr, out_hw, left, a);
        default: return convbf16::gemm_patch_nv<1>(p, patch, yr, out_hw, left, a);
    }
}

void bf16_tap_pairs(const float* wt, int cout, int ntaps, uint32_t* out) {
    const int npairs = (ntaps + 1) / 2;
    for (int o = 0; o < cout; ++o)
        for (int m = 0; m < npairs; ++m) {
            const float* w = wt + (int64_t)o * ntaps;
            out[o * npairs + m] =
                bf16_bits(w[2 * m]) | (2 * m + 1 < ntaps ? bf16_bits(w[2 * m + 1]) << 16 : 0u);
        }
}

}  // namespace picosparse
