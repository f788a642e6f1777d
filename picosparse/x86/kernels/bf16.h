// The sparse 1x1 conv's BF16 microkernel and tile readers (bf16.cpp), for CPUs with
// AVX512-BF16; the operator (sparse1x1.cpp) calls them where the fp32 ones would run.
#pragma once
#include <cstdint>

#include "activation.h"

namespace picosparse {

// The pair form in use (api.h's SparsePairs, or its per-image gated copy of the values)
struct SpBf16 {
    const int32_t* rowptr = nullptr;
    const int32_t* offs = nullptr;
    const uint32_t* vals = nullptr;
    int dense_pairs = 0;  // > 0: every row holds all these pairs in order (SparsePairs::dense)
};

struct SparseInput;

// Image img's pixel tile [p0, p0 + np) of x, as `in` lays it out, straight into bf16 pairs
// [ceil(cin / 2)][tw][2] (zeros past np and past an odd cin): one pass, no fp32 copy. False
// (nothing written) where a pair would straddle the NCHW and blocked parts (odd in_nchw).
bool bf16_read_tile(int cin, const SparseInput& in, const float* x, int64_t img, int64_t hw,
                    int tw, int64_t p0, int np, uint16_t* out);

// A packed fp32 tile [cin][tw] to bf16 pairs [ceil(cin / 2)][tw][2] (an odd cin's last pair
// gets a zero channel). tw: a multiple of 16.
void bf16_pack(const float* buf, int cin, int tw, uint16_t* out);

// Rows [r0, r1) of one tile, as sp_rows does in fp32: y[r][p0 + i] for i < np, rows `row`
// floats apart from yb.
void bf16_rows(const SpBf16& p, const float* bias, const uint16_t* buf, int np, float* yb,
               int64_t row, int64_t p0, int r0, int r1, const Activation& a);

// out[s / 2] = the bf16 pair of fvals[s] * gain[ch[s]], fvals[s + 1] * gain[ch[s + 1]], for
// the nslots (even) values of SparsePairs::fvals: a gate folded into the pairs per image
void bf16_gated(const float* fvals, const int32_t* ch, int nslots, const float* gain,
                uint32_t* out);

uint32_t bf16_bits(float v);  // round to nearest even, as vcvtne2ps2bf16 does

// conv2d's per-row GEMM (the stem) in BF16 (conv_bf16.cpp): patch [cin * k * k taps][nv][16]
// fp32, the im2col of nv vectors of one output row -> that row of every output channel, at yr
// (planes out_hw apart, `left` outputs valid), with p.wt_pairs (bf16_tap_pairs).
struct ConvParams;
void bf16_gemm_patch(const ConvParams& p, const float* patch, int nv, float* yr, int64_t out_hw,
                     int left, const Activation& a);
// wt [cout][ntaps] as [cout][ceil(ntaps / 2)] bf16 pairs of consecutive taps (odd: a zero tap)
void bf16_tap_pairs(const float* wt, int cout, int ntaps, uint32_t* out);

}  // namespace picosparse
