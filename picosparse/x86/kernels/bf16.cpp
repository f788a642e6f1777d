// The BF16 microkernels: one vdpbf16ps multiplies a broadcast pair of weights (input channels
// 2j, 2j + 1 of one sparse 1x1 row; two taps of the stem conv) with 16 pixels of both and adds
// both products to 16 fp32 accumulators. Compiled for AVX512-BF16 only; called only where
// cpu_supports_bf16() holds.
#include "bf16.h"

#include <algorithm>
#include <cstring>

#include "api.h"

#include "simd.h"

namespace picosparse {

uint32_t bf16_bits(float v) {
    uint32_t u;
    std::memcpy(&u, &v, 4);
    if ((u & 0x7f800000u) == 0x7f800000u) return (u >> 16) | ((u & 0xffffu) ? 0x40u : 0u);
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

namespace bf16 {
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512bf16,avx2,fma")
using V = VAvx512;
#include "activate.inc"

// lanes 0..15 of the low half and 0..15 of the high half interleaved: pixel i's two channels
// side by side, as vdpbf16ps pairs them
static inline __m512i interleave_halves() {
    alignas(64) int16_t idx[32];
    for (int j = 0; j < 32; ++j) idx[j] = (int16_t)((j & 1) ? 16 + j / 2 : j / 2);
    return _mm512_load_si512(idx);
}

void pack(const float* buf, int cin, int tw, uint16_t* out) {
    const __m512i perm = interleave_halves();
    for (int j = 0; 2 * j < cin; ++j) {
        const float* a = buf + (size_t)(2 * j) * tw;
        const float* b = 2 * j + 1 < cin ? a + tw : nullptr;
        uint16_t* o = out + (size_t)j * 2 * tw;
        for (int i = 0; i < tw; i += 16) {
            const __m512 va = _mm512_loadu_ps(a + i);
            const __m512 vb = b ? _mm512_loadu_ps(b + i) : _mm512_setzero_ps();
            // low half: a's 16 values, high half: b's
            const __m512i v = (__m512i)_mm512_cvtne2ps_pbh(vb, va);
            _mm512_storeu_si512(o + 2 * i, _mm512_permutexvar_epi16(perm, v));
        }
    }
}

void gated(const float* fvals, const int32_t* ch, int nslots, const float* gain,
           uint32_t* out) {
    int s = 0;
    // 32 values -> 32 bf16s in the same order: slot 2p (low half) and 2p + 1 of pair p
    for (; s + 32 <= nslots; s += 32) {
        const __m512 a = _mm512_mul_ps(_mm512_loadu_ps(fvals + s),
                                       _mm512_i32gather_ps(_mm512_loadu_si512(ch + s), gain, 4));
        const __m512 b = _mm512_mul_ps(
            _mm512_loadu_ps(fvals + s + 16),
            _mm512_i32gather_ps(_mm512_loadu_si512(ch + s + 16), gain, 4));
        _mm512_storeu_si512(out + s / 2, (__m512i)_mm512_cvtne2ps_pbh(b, a));
    }
    for (; s < nslots; s += 2)
        out[s / 2] = bf16_bits(fvals[s] * gain[ch[s]]) |
                     (bf16_bits(fvals[s + 1] * gain[ch[s + 1]]) << 16);
}

// U accumulator sets over consecutive pairs: NV * U independent dot-product chains
template <int NV, int U>
static inline void rows(const SpBf16& p, const float* bias, const uint16_t* buf, int np,
                        float* yb, int64_t row, int64_t p0, int r0, int r1, const Activation& a) {
    for (int r = r0; r < r1; ++r) {
        __m512 acc[U][NV];
        const __m512 b0 = _mm512_set1_ps(bias ? bias[r] : 0.f);
        for (int i = 0; i < NV; ++i) acc[0][i] = b0;
        for (int u = 1; u < U; ++u)
            for (int i = 0; i < NV; ++i) acc[u][i] = _mm512_setzero_ps();
        int k = p.rowptr[r];
        const int e = p.rowptr[r + 1];
        for (; k + U <= e; k += U)
            for (int u = 0; u < U; ++u) {
                const uint16_t* xu = buf + p.offs[k + u];
                const __m512bh wu = (__m512bh)_mm512_set1_epi32((int)p.vals[k + u]);
                for (int i = 0; i < NV; ++i)
                    acc[u][i] = _mm512_dpbf16_ps(acc[u][i],
                                                 (__m512bh)_mm512_load_si512(xu + 32 * i), wu);
            }
        for (; k < e; ++k) {
            const uint16_t* xu = buf + p.offs[k];
            const __m512bh wu = (__m512bh)_mm512_set1_epi32((int)p.vals[k]);
            for (int i = 0; i < NV; ++i)
                acc[0][i] = _mm512_dpbf16_ps(acc[0][i], (__m512bh)_mm512_load_si512(xu + 32 * i),
                                             wu);
        }
        float* yr = yb + (int64_t)r * row + p0;
        for (int i = 0; i < NV; ++i) {
            __m512 s = acc[0][i];
            for (int u = 1; u < U; ++u) s = _mm512_add_ps(s, acc[u][i]);
            s = activate(s, a);
            const int left = np - i * 16;
            if (left >= 16) _mm512_storeu_ps(yr + i * 16, s);
            else if (left > 0) V::store_n(yr + i * 16, s, left);
        }
    }
}

void rows_any(const SpBf16& p, const float* bias, const uint16_t* buf, int np, float* yb,
              int64_t row, int64_t p0, int r0, int r1, const Activation& a) {
    switch ((np + 15) / 16) {
        case 5: return rows<5, 2>(p, bias, buf, np, yb, row, p0, r0, r1, a);
        case 4: return rows<4, 2>(p, bias, buf, np, yb, row, p0, r0, r1, a);
        case 3: return rows<3, 3>(p, bias, buf, np, yb, row, p0, r0, r1, a);
        case 2: return rows<2, 4>(p, bias, buf, np, yb, row, p0, r0, r1, a);
        default: return rows<1, 8>(p, bias, buf, np, yb, row, p0, r0, r1, a);
    }
}
// ------------------------------------------------------------ the stem's dense conv
// Per output row: the im2col patch of NV vectors of pixels with its taps in pairs (the same
// masked / stride-phase loads as the fp32 path, two taps interleaved), then OCB output
// channels x NV vectors of fp32 accumulators, one vdpbf16ps per tap pair.
template <int OCB, int NV>
static inline void conv_chunk(const uint16_t* patch, int npairs, const uint32_t* wp,
                              const float* bias, float* yr, int64_t out_hw, int left,
                              const Activation& a) {
    __m512 acc[OCB][NV];
    for (int o = 0; o < OCB; ++o)
        for (int v = 0; v < NV; ++v) acc[o][v] = _mm512_set1_ps(bias ? bias[o] : 0.f);
    for (int q = 0; q < npairs; ++q) {
        __m512bh xv[NV];
        for (int v = 0; v < NV; ++v)
            xv[v] = (__m512bh)_mm512_load_si512(patch + (size_t)(q * NV + v) * 32);
        for (int o = 0; o < OCB; ++o) {
            const __m512bh wv = (__m512bh)_mm512_set1_epi32((int)wp[(size_t)o * npairs + q]);
            for (int v = 0; v < NV; ++v) acc[o][v] = _mm512_dpbf16_ps(acc[o][v], xv[v], wv);
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

constexpr int kOcb = 6, kNv = 4, kMaxK = 7, kMaxTaps = 256;

void conv_rows(const ConvParams& p, const float* xi, int r0, int r1, int row0, float* y,
               int64_t out_hw, const Activation& a) {
    const int K = p.k, s = p.stride, ntaps = p.cin * K * K, npairs = (ntaps + 1) / 2;
    const int wo = p.out_w();
    const int64_t hw = (int64_t)p.h * p.w;
    alignas(64) uint16_t patch[(kMaxTaps / 2 + 1) * kNv * 32];
    alignas(64) uint32_t wp[64 * (kMaxTaps / 2 + 1)];
    alignas(64) float taps[2][kNv * 16];
    const __m512i perm = interleave_halves();
    for (int oc0 = 0; oc0 < p.cout; oc0 += 64) {  // weight pairs of 64 channels at a time
        const int ocn = std::min(64, p.cout - oc0);
        for (int o = 0; o < ocn; ++o)
            for (int q = 0; q < npairs; ++q) {
                const float* w = p.wt + (int64_t)(oc0 + o) * ntaps;
                wp[o * npairs + q] = bf16_bits(w[2 * q]) |
                                     (2 * q + 1 < ntaps ? bf16_bits(w[2 * q + 1]) << 16 : 0u);
            }
        for (int col0 = 0; col0 < wo; col0 += kNv * 16) {
            V::Cols cols[kMaxK * kNv];
            for (int kx = 0; kx < K; ++kx)
                for (int v = 0; v < kNv; ++v)
                    cols[kx * kNv + v] = V::Cols(s * (col0 + v * 16) + kx - p.pad_l, p.w, s);
            for (int oy = r0; oy < r1; ++oy) {
                // tap t's kNv vectors into taps[t & 1]; each pair to the patch, interleaved
                for (int t = 0; t < 2 * npairs; ++t) {
                    float* dst = taps[t & 1];
                    if (t < ntaps) {
                        const int ci = t / (K * K), ky = t / K % K, kx = t % K;
                        const int r = oy * s + ky - p.pad_t;
                        const float* xr = xi + ci * hw + (int64_t)r * p.w;
                        for (int v = 0; v < kNv; ++v)
                            _mm512_store_ps(dst + v * 16, r >= 0 && r < p.h
                                                              ? cols[kx * kNv + v].load(xr)
                                                              : _mm512_setzero_ps());
                    } else {
                        for (int v = 0; v < kNv; ++v) _mm512_store_ps(dst + v * 16, _mm512_setzero_ps());
                    }
                    if (t & 1)
                        for (int v = 0; v < kNv; ++v) {
                            const __m512i b = (__m512i)_mm512_cvtne2ps_pbh(
                                _mm512_load_ps(taps[1] + v * 16), _mm512_load_ps(taps[0] + v * 16));
                            _mm512_store_si512(patch + (size_t)((t / 2) * kNv + v) * 32,
                                               _mm512_permutexvar_epi16(perm, b));
                        }
                }
                float* yr = y + (int64_t)(oy - row0) * wo + col0 + (int64_t)oc0 * out_hw;
                const float* bias = p.bias ? p.bias + oc0 : nullptr;
                int o = 0;
                for (; o + kOcb <= ocn; o += kOcb)
                    conv_chunk<kOcb, kNv>(patch, npairs, wp + o * npairs, bias ? bias + o : nullptr,
                                          yr + o * out_hw, out_hw, wo - col0, a);
                for (; o < ocn; ++o)
                    conv_chunk<1, kNv>(patch, npairs, wp + o * npairs, bias ? bias + o : nullptr,
                                       yr + o * out_hw, out_hw, wo - col0, a);
            }
        }
    }
}
#pragma GCC pop_options
}  // namespace bf16

void bf16_conv_rows(const ConvParams& p, const float* xi, int r0, int r1, int row0, float* y,
                    int64_t out_hw, const Activation& a) {
    bf16::conv_rows(p, xi, r0, r1, row0, y, out_hw, a);
}

void bf16_pack(const float* buf, int cin, int tw, uint16_t* out) { bf16::pack(buf, cin, tw, out); }

void bf16_gated(const float* fvals, const int32_t* ch, int nslots, const float* gain,
                uint32_t* out) {
    bf16::gated(fvals, ch, nslots, gain, out);
}

void bf16_rows(const SpBf16& p, const float* bias, const uint16_t* buf, int np, float* yb,
               int64_t row, int64_t p0, int r0, int r1, const Activation& a) {
    bf16::rows_any(p, bias, buf, np, yb, row, p0, r0, r1, a);
}

}  // namespace picosparse
