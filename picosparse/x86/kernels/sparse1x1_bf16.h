// The sparse 1x1 conv's BF16 microkernel and tile packer (sparse1x1_bf16.cpp), for CPUs with
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
};

// A packed fp32 tile [cin][tw] to bf16 pairs [ceil(cin / 2)][tw][2] (an odd cin's last pair
// gets a zero channel). tw: a multiple of 16.
void bf16_pack(const float* buf, int cin, int tw, uint16_t* out);

// Rows [r0, r1) of one tile, as sp_rows does in fp32: y[r][p0 + i] for i < np, rows `row`
// floats apart from yb.
void bf16_rows(const SpBf16& p, const float* bias, const uint16_t* buf, int np, float* yb,
               int64_t row, int64_t p0, int r0, int r1, const Activation& a);

uint32_t bf16_bits(float v);  // round to nearest even, as vcvtne2ps2bf16 does

}  // namespace picosparse
