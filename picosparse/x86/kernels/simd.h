// One vector interface per instruction set, so each kernel is written once (as a template over
// V) and instantiated per ISA. The AVX2 / AVX-512 traits live inside `#pragma GCC target`
// regions: the templates instantiated with them are compiled for that ISA while the library
// itself stays baseline x86-64 and picks its path at run time (see per_isa.h).
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>

#include "activation.h"

namespace picosparse {

// Flush-to-zero + denormals-are-zero while a kernel runs (restored after). A denormal input
// costs a ~100-cycle microcode assist per FMA: measured 100x slower on a layer whose
// activations were denormal, which random-init PicoDets produce; oneDNN's kernels do the same.
struct FlushDenormals {
    unsigned saved;
    FlushDenormals() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040u); }
    ~FlushDenormals() { _mm_setcsr(saved); }
};

// Portable: GCC/Clang vector extension, 4 floats, lowered to SSE2 on baseline x86-64.
struct VPortable {
    typedef float T __attribute__((vector_size(16)));
    static constexpr int N = 4;
    static T zero() { return T{0.f, 0.f, 0.f, 0.f}; }
    static T set1(float v) { return T{v, v, v, v}; }
    static T load(const float* p) { return *reinterpret_cast<const T*>(p); }
    static T loadu(const float* p) {
        T v;
        __builtin_memcpy(&v, p, sizeof(v));
        return v;
    }
    static void storeu(float* p, T v) { __builtin_memcpy(p, &v, sizeof(v)); }
    static void store_n(float* p, T v, int n) {  // first n < N lanes
        for (int i = 0; i < n; ++i) p[i] = v[i];
    }
    // Loads lanes l: row[c0 + s*l] where 0 <= c0 + s*l < w, else 0 (nothing outside the
    // row is touched); built once per column vector, used for every row.
    struct Cols {
        int c0 = 0, w = 0, s = 1;
        Cols() = default;
        Cols(int c0_, int w_, int s_) : c0(c0_), w(w_), s(s_) {}
        T load(const float* row, float fill = 0.f) const {
            T v = set1(fill);
            for (int l = 0; l < N; ++l) {
                const int c = c0 + s * l;
                if (c >= 0 && c < w) v[l] = row[c];
            }
            return v;
        }
        template <int S>  // load() with the stride known at compile time (= s) and fill 0
        T load_s(const float* row) const { return load(row); }
    };
    // lanes SH .. N-1 of cur, then lanes 0 .. SH-1 of next (SH <= N)
    template <int SH>
    static T shift(T cur, T next) {
        T r;
        for (int l = 0; l < N; ++l) r[l] = l + SH < N ? cur[l + SH] : next[l + SH - N];
        return r;
    }
    static T even(T a, T b) {  // lanes 0, 2, 4, ... of a then b
        T r;
        for (int l = 0; l < N; ++l) r[l] = 2 * l < N ? a[2 * l] : b[2 * l - N];
        return r;
    }
    static T odd(T a, T b) {  // lanes 1, 3, 5, ... of a then b
        T r;
        for (int l = 0; l < N; ++l) r[l] = 2 * l + 1 < N ? a[2 * l + 1] : b[2 * l + 1 - N];
        return r;
    }
    static void transpose(T r[N]) {  // r[i][j] <-> r[j][i]
        for (int i = 0; i < N; ++i)
            for (int j = i + 1; j < N; ++j) {
                const float t = r[i][j];
                r[i][j] = r[j][i];
                r[j][i] = t;
            }
    }
    static T fmadd(T a, T b, T c) { return a * b + c; }
    static T gather(const float* base, const int32_t* idx) {  // base[idx[l]] per lane
        return T{base[idx[0]], base[idx[1]], base[idx[2]], base[idx[3]]};
    }
    // the first n < N lanes of loadu / gather, the rest 0 (nothing past them is touched)
    static T loadu_n(const float* p, int n) {
        T v = zero();
        for (int i = 0; i < n; ++i) v[i] = p[i];
        return v;
    }
    static T gather_n(const float* base, const int32_t* idx, int n) {
        T v = zero();
        for (int i = 0; i < n; ++i) v[i] = base[idx[i]];
        return v;
    }
    static float hsum(T v) { return (v[0] + v[1]) + (v[2] + v[3]); }
    static T div(T a, T b) { return a / b; }
    static T pow2n(T n) {  // 2^n for integral n in [-126, 127]: the exponent bits directly
        typedef int I __attribute__((vector_size(16)));
        const I bits = (__builtin_convertvector(n, I) + 127) << 23;
        T r;
        __builtin_memcpy(&r, &bits, sizeof(r));
        return r;
    }
    static T add(T a, T b) { return a + b; }
    static T mul(T a, T b) { return a * b; }
    static T max(T a, T b) { return a > b ? a : b; }
    static T min(T a, T b) { return a < b ? a : b; }
};

#pragma GCC push_options
#pragma GCC target("avx2,fma")
struct VAvx2 {
    typedef __m256 T;
    static constexpr int N = 8;
    static T zero() { return _mm256_setzero_ps(); }
    static T set1(float v) { return _mm256_set1_ps(v); }
    static T load(const float* p) { return _mm256_load_ps(p); }
    static T loadu(const float* p) { return _mm256_loadu_ps(p); }
    static void storeu(float* p, T v) { _mm256_storeu_ps(p, v); }
    static void store_n(float* p, T v, int n) {
        const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_maskstore_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx), v);
    }
    struct Cols {  // masked loads / gathers: never fault
        int c0 = 0, s = 1;
        __m256i idx, ok;
        Cols() = default;
        Cols(int c0_, int w, int s_) : c0(c0_), s(s_) {
            idx = _mm256_add_epi32(
                _mm256_set1_epi32(c0), _mm256_mullo_epi32(_mm256_set1_epi32(s),
                                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
            ok = _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_setzero_si256(), idx),
                                     _mm256_cmpgt_epi32(_mm256_set1_epi32(w), idx));
        }
        T load(const float* row, float fill = 0.f) const {
            const __m256 m = _mm256_castsi256_ps(ok);
            if (s == 1)
                return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(row + c0, ok), m);
            return _mm256_mask_i32gather_ps(_mm256_set1_ps(fill), row, idx, m, 4);
        }
        template <int S>  // load() with the stride known at compile time (= s) and fill 0
        T load_s(const float* row) const {
            if constexpr (S == 1) return _mm256_maskload_ps(row + c0, ok);
            return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), row, idx,
                                            _mm256_castsi256_ps(ok), 4);
        }
    };
    template <int SH>  // AVX2 has no cross-lane align: two permutes and a blend
    static T shift(T cur, T next) {
        const __m256i idx = _mm256_setr_epi32(SH & 7, (1 + SH) & 7, (2 + SH) & 7, (3 + SH) & 7,
                                              (4 + SH) & 7, (5 + SH) & 7, (6 + SH) & 7,
                                              (7 + SH) & 7);
        return _mm256_blend_ps(_mm256_permutevar8x32_ps(cur, idx),
                               _mm256_permutevar8x32_ps(next, idx), (0xFF << (8 - SH)) & 0xFF);
    }
    static T even(T a, T b) {  // lanes 0, 2, 4, ... of a then b
        return _mm256_castpd_ps(_mm256_permute4x64_pd(
            _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))), 0xD8));
    }
    static T odd(T a, T b) {  // lanes 1, 3, 5, ... of a then b
        return _mm256_castpd_ps(_mm256_permute4x64_pd(
            _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))), 0xD8));
    }
    static void transpose(T r[N]) {  // 8 x 8: unpack, shuffle, swap 128-bit halves
        T t[8], u[8];
        for (int i = 0; i < 8; i += 2) {
            t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
        }
        for (int i = 0; i < 8; i += 4) {
            u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
            u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
            u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
            u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
        }
        for (int i = 0; i < 4; ++i) {
            r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
            r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
        }
    }
    static T fmadd(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
    static T gather(const float* base, const int32_t* idx) {
        return _mm256_i32gather_ps(base, _mm256_loadu_si256((const __m256i*)idx), 4);
    }
    static __m256i lanes_below(int n) {  // mask of lanes 0 .. n-1
        return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    }
    static T loadu_n(const float* p, int n) { return _mm256_maskload_ps(p, lanes_below(n)); }
    static T gather_n(const float* base, const int32_t* idx, int n) {
        const __m256i m = lanes_below(n);
        return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), base, _mm256_maskload_epi32(idx, m),
                                        _mm256_castsi256_ps(m), 4);
    }
    static float hsum(T v) {
        const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
        return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
    }
    static T div(T a, T b) { return _mm256_div_ps(a, b); }
    static T pow2n(T n) {  // 2^n for integral n in [-126, 127]: the exponent bits directly
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
    }
    static T add(T a, T b) { return _mm256_add_ps(a, b); }
    static T mul(T a, T b) { return _mm256_mul_ps(a, b); }
    static T max(T a, T b) { return _mm256_max_ps(a, b); }
    static T min(T a, T b) { return _mm256_min_ps(a, b); }
};
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
struct VAvx512 {
    typedef __m512 T;
    static constexpr int N = 16;
    static T zero() { return _mm512_setzero_ps(); }
    static T set1(float v) { return _mm512_set1_ps(v); }
    static T load(const float* p) { return _mm512_load_ps(p); }
    static T loadu(const float* p) { return _mm512_loadu_ps(p); }
    static void storeu(float* p, T v) { _mm512_storeu_ps(p, v); }
    static void store_n(float* p, T v, int n) {
        _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1u), v);
    }
    struct Cols {  // masked loads (+ one permute for stride 2) / gathers: never fault
        int c0 = 0, s = 1;
        __mmask16 lo = 0, hi = 0;
        Cols() = default;
        static __mmask16 lanes(int c0, int w) {  // l in [0, 16) with 0 <= c0 + l < w
            const int a = c0 < 0 ? -c0 : 0, b = w - c0 < 16 ? w - c0 : 16;
            return b <= a ? 0 : (__mmask16)(((1u << b) - 1u) & ~((1u << a) - 1u));
        }
        Cols(int c0_, int w, int s_) : c0(c0_), s(s_) {
            if (s <= 2) {
                lo = lanes(c0, w);
                hi = lanes(c0 + 16, w);
            } else {
                const __m512i c = idx();
                lo = _mm512_cmpge_epi32_mask(c, _mm512_setzero_si512()) &
                     _mm512_cmplt_epi32_mask(c, _mm512_set1_epi32(w));
                hi = 0;
            }
        }
        __m512i idx() const {
            return _mm512_add_epi32(_mm512_set1_epi32(c0),
                                    _mm512_mullo_epi32(_mm512_set1_epi32(s),
                                                       _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8,
                                                                         9, 10, 11, 12, 13, 14, 15)));
        }
        T load(const float* row, float fill = 0.f) const {
            const T f = _mm512_set1_ps(fill);
            if (s == 1) return _mm512_mask_loadu_ps(f, lo, row + c0);
            if (s == 2) {
                const __m512i even =
                    _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
                return _mm512_permutex2var_ps(_mm512_mask_loadu_ps(f, lo, row + c0), even,
                                              _mm512_mask_loadu_ps(f, hi, row + c0 + 16));
            }
            return _mm512_mask_i32gather_ps(f, lo, idx(), row, 4);
        }
        template <int S>  // load() with the stride known at compile time (= s) and fill 0
        T load_s(const float* row) const {
            if constexpr (S == 1) return _mm512_maskz_loadu_ps(lo, row + c0);
            if constexpr (S == 2) {
                const __m512i even =
                    _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
                return _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(lo, row + c0), even,
                                              _mm512_maskz_loadu_ps(hi, row + c0 + 16));
            }
            return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), lo, idx(), row, 4);
        }
    };
    template <int SH>  // from registers: an unaligned load splits cache lines (half speed)
    static T shift(T cur, T next) {
        return _mm512_castsi512_ps(
            _mm512_alignr_epi32(_mm512_castps_si512(next), _mm512_castps_si512(cur), SH));
    }
    static T even(T a, T b) {  // lanes 0, 2, 4, ... of a then b
        return _mm512_permutex2var_ps(
            a, _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), b);
    }
    static T odd(T a, T b) {  // lanes 1, 3, 5, ... of a then b
        return _mm512_permutex2var_ps(
            a, _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31), b);
    }
    static void transpose(T r[N]) {  // 16 x 16: unpack ps, unpack pd, two 128-bit shuffles
        T t[16];
        for (int i = 0; i < 16; i += 2) {
            t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
        }
        for (int i = 0; i < 16; i += 4) {
            const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
            const __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
            r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
            r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
            r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
            r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
        }
        for (int i = 0; i < 16; i += 8)
            for (int j = 0; j < 4; ++j) {
                t[i + j] = _mm512_shuffle_f32x4(r[i + j], r[i + 4 + j], 0x88);
                t[i + 4 + j] = _mm512_shuffle_f32x4(r[i + j], r[i + 4 + j], 0xdd);
            }
        for (int j = 0; j < 8; ++j) {
            r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
            r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
        }
    }
    static T fmadd(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
    static T gather(const float* base, const int32_t* idx) {
        return _mm512_i32gather_ps(_mm512_loadu_si512(idx), base, 4);
    }
    static T loadu_n(const float* p, int n) {
        return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p);
    }
    static T gather_n(const float* base, const int32_t* idx, int n) {
        const __mmask16 m = (__mmask16)((1u << n) - 1u);
        return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, _mm512_maskz_loadu_epi32(m, idx),
                                        base, 4);
    }
    static float hsum(T v) { return _mm512_reduce_add_ps(v); }
    static T div(T a, T b) { return _mm512_div_ps(a, b); }
    static T pow2n(T n) {  // 2^n for integral n in [-126, 127]: the exponent bits directly
        return _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
    }
    static T add(T a, T b) { return _mm512_add_ps(a, b); }
    static T mul(T a, T b) { return _mm512_mul_ps(a, b); }
    static T max(T a, T b) { return _mm512_max_ps(a, b); }
    static T min(T a, T b) { return _mm512_min_ps(a, b); }
};
#pragma GCC pop_options

// A thread's reusable 64-byte aligned scratch buffer (one per `Tag`), grown on demand.
template <int Tag>
float* scratch(size_t floats) {
    thread_local float* buf = nullptr;
    thread_local size_t cap = 0;
    if (floats > cap) {
        std::free(buf);
        cap = (floats + 1023) & ~size_t(1023);
        buf = static_cast<float*>(std::aligned_alloc(64, cap * sizeof(float)));
    }
    return buf;
}

}  // namespace picosparse
