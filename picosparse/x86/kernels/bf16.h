// The BF16 microkernels (bf16.cpp), for CPUs with AVX512-BF16: the sparse 1x1 conv's (and its
// tile packer), called by sparse1x1.cpp, and the stem's few-tap dense conv, called by
// conv2d_impl.inc, where the fp32 ones would run.
#pragma once
#include <cstdint>

#include "activation.h"

namespace picosparse {

// The pair form in use (api.h's SparsePairs, or its per-image gated copy of the values)
struct SpBf16 {
    const int32_t* rowptr = nullptr;
    const int32_t* offs = nullptr;
    const uint32_t* vals = nullptr;
};

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

// The BF16 form of the dense few-tap conv's rows (conv2d_impl.inc's gemm_rows): output rows
// [r0, r1) of every channel of image xi into y ([cout][rows][wo], row r at r - row0, stride
// out_hw). Needs p.cin * p.k * p.k <= 256 and p.k <= 7.
struct ConvParams;
void bf16_conv_rows(const ConvParams& p, const float* xi, int r0, int r1, int row0, float* y,
                    int64_t out_hw, const Activation& a);

uint32_t bf16_bits(float v);  // round to nearest even, as vcvtne2ps2bf16 does

}  // namespace picosparse
