// The BF16 sparse 1x1 microkernel: one vdpbf16ps multiplies a broadcast pair of weights
// (input channels 2j, 2j + 1 of one output row) with 16 pixels of both channels and adds both
// products to 16 fp32 accumulators. Compiled for AVX512-BF16 only; called only where
// cpu_supports_bf16() holds.
#include "sparse1x1_bf16.h"

#include <cstring>

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
#pragma GCC pop_options
}  // namespace bf16

void bf16_pack(const float* buf, int cin, int tw, uint16_t* out) { bf16::pack(buf, cin, tw, out); }

void bf16_rows(const SpBf16& p, const float* bias, const uint16_t* buf, int np, float* yb,
               int64_t row, int64_t p0, int r0, int r1, const Activation& a) {
    bf16::rows_any(p, bias, buf, np, yb, row, p0, r0, r1, a);
}

}  // namespace picosparse
