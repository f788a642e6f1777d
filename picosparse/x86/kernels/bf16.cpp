// The BF16 sparse 1x1 microkernel: one vdpbf16ps multiplies a broadcast pair of weights (input
// channels 2j, 2j + 1 of one row) with 16 pixels of both and adds both products to 16 fp32
// accumulators. Compiled for AVX512-BF16 only; called only where bf16_runs() holds.
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

static inline __mmask16 first(int n) {  // lanes [0, n), n clamped to [0, 16]
    return n >= 16 ? (__mmask16)0xffff : n > 0 ? (__mmask16)((1u << n) - 1) : (__mmask16)0;
}

// a's and b's 16 values as 16 interleaved bf16 pairs
static inline void store_pairs(uint16_t* o, __m512 a, __m512 b, __m512i perm) {
    _mm512_store_si512(o, _mm512_permutexvar_epi16(perm, (__m512i)_mm512_cvtne2ps_pbh(b, a)));
}

// nch NCHW planes hw floats apart (pixels [0, np) from xb on), two channels at a time, into
// pairs [ceil(nch / 2)][tw][2]
void pack_nchw(const float* xb, int nch, int64_t hw, int tw, int np, uint16_t* out) {
    const __m512i perm = interleave_halves();
    for (int j = 0; 2 * j < nch; ++j) {
        const float* a = xb + (int64_t)(2 * j) * hw;
        const float* b = 2 * j + 1 < nch ? a + hw : nullptr;
        uint16_t* o = out + (size_t)j * 2 * tw;
        for (int i = 0; i < tw; i += 16) {
            const __mmask16 m = first(np - i);
            store_pairs(o + 2 * i, _mm512_maskz_loadu_ps(m, a + i),
                        b ? _mm512_maskz_loadu_ps(m, b + i) : _mm512_setzero_ps(), perm);
        }
    }
}

bool read_tile(int cin, const SparseInput& in, const float* x, int64_t img, int64_t hw, int tw,
               int64_t p0, int np, uint16_t* out) {
    const int nchw = in.blocked ? in.nchw_prefix : cin;  // leading NCHW channels
    if (nchw < cin && nchw % 2) return false;
    const __m512i perm = interleave_halves();
    const float* xi = x + img * (int64_t)cin * hw;
    pack_nchw(xi + p0, nchw, hw, tw, np, out);
    // blocked channels: per block, 16 pixels' channel vectors transposed into 16 channel rows
    const float* xb = xi + (int64_t)nchw * hw;
    __m512 v[16];
    for (int blk = 0; blk < (cin - nchw) / 16; ++blk) {
        const float* src = xb + ((int64_t)blk * hw + p0) * 16;
        uint16_t* o = out + (size_t)(nchw / 2 + blk * 8) * 2 * tw;
        for (int pb = 0; pb < tw; pb += 16) {
            const int npx = std::min(16, np - pb);
            for (int k = 0; k < 16; ++k)
                v[k] = k < npx ? _mm512_loadu_ps(src + (int64_t)(pb + k) * 16)
                               : _mm512_setzero_ps();
            V::transpose(v);
            for (int c = 0; c < 8; ++c)
                store_pairs(o + (size_t)c * 2 * tw + 2 * pb, v[2 * c], v[2 * c + 1], perm);
        }
    }
    return true;
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

// Dense rows, MR at a time: each pair's NV tile vectors are loaded once for MR rows (the
// sparse loop above loads them once per row and is load-bound; a head's 128 -> 112 conv ran
// 1.15-1.33x faster this way on 20x20 / 40x40 maps). MR * NV accumulators + NV tile vectors +
// 1 weight fit the 32 registers.
template <int NV, int MR>
static inline void dense_rows(const SpBf16& p, const float* bias, const uint16_t* buf, int np,
                              float* yb, int64_t row, int64_t p0, int r0, int r1,
                              const Activation& a) {
    const int npairs = p.dense_pairs;
    const int64_t stride = p.offs[1];  // bf16s between pairs in the tile: 2 tw
    int r = r0;
    for (; r + MR <= r1; r += MR) {
        __m512 acc[MR][NV];
        for (int m = 0; m < MR; ++m) {
            const __m512 b = _mm512_set1_ps(bias ? bias[r + m] : 0.f);
            for (int i = 0; i < NV; ++i) acc[m][i] = b;
        }
        const uint32_t* v = p.vals + (int64_t)r * npairs;
        for (int j = 0; j < npairs; ++j) {
            const uint16_t* xj = buf + j * stride;
            __m512bh x[NV];
            for (int i = 0; i < NV; ++i) x[i] = (__m512bh)_mm512_load_si512(xj + 32 * i);
            for (int m = 0; m < MR; ++m) {
                const __m512bh wm = (__m512bh)_mm512_set1_epi32((int)v[(int64_t)m * npairs + j]);
                for (int i = 0; i < NV; ++i) acc[m][i] = _mm512_dpbf16_ps(acc[m][i], x[i], wm);
            }
        }
        for (int m = 0; m < MR; ++m) {
            float* yr = yb + (int64_t)(r + m) * row + p0;
            for (int i = 0; i < NV; ++i) {
                const __m512 s = activate(acc[m][i], a);
                const int left = np - i * 16;
                if (left >= 16) _mm512_storeu_ps(yr + i * 16, s);
                else if (left > 0) V::store_n(yr + i * 16, s, left);
            }
        }
    }
    if (r < r1) rows<NV, 2>(p, bias, buf, np, yb, row, p0, r, r1, a);
}

void rows_any(const SpBf16& p, const float* bias, const uint16_t* buf, int np, float* yb,
              int64_t row, int64_t p0, int r0, int r1, const Activation& a) {
    if (p.dense_pairs > 1) switch ((np + 15) / 16) {
        case 5: return dense_rows<5, 4>(p, bias, buf, np, yb, row, p0, r0, r1, a);
        case 4: return dense_rows<4, 6>(p, bias, buf, np, yb, row, p0, r0, r1, a);
        case 3: return dense_rows<3, 8>(p, bias, buf, np, yb, row, p0, r0, r1, a);
        case 2: return dense_rows<2, 12>(p, bias, buf, np, yb, row, p0, r0, r1, a);
        default: return dense_rows<1, 16>(p, bias, buf, np, yb, row, p0, r0, r1, a);
    }
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

void bf16_pack(const float* buf, int cin, int tw, uint16_t* out) {
    bf16::pack_nchw(buf, cin, tw, tw, tw, out);  // the tile's rows: planes of tw pixels
}

bool bf16_read_tile(int cin, const SparseInput& in, const float* x, int64_t img, int64_t hw,
                    int tw, int64_t p0, int np, uint16_t* out) {
    return bf16::read_tile(cin, in, x, img, hw, tw, p0, np, out);
}

void bf16_gated(const float* fvals, const int32_t* ch, int nslots, const float* gain,
                uint32_t* out) {
    bf16::gated(fvals, ch, nslots, gain, out);
}

void bf16_rows(const SpBf16& p, const float* bias, const uint16_t* buf, int np, float* yb,
               int64_t row, int64_t p0, int r0, int r1, const Activation& a) {
    bf16::rows_any(p, bias, buf, np, yb, row, p0, r0, r1, a);
}

}  // namespace picosparse
