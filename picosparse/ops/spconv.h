// Sparse 1x1 convolution, NCHW fp32: y[n, r, p] = act(bias[r] + sum_k vals[k] * x[n, cols[k], p])
// for k in [rowptr[r], rowptr[r+1]).
//
// Weight format ("row CSR"): one CSR row per output channel, int32 column indices into the input
// channels, fp32 values with BN already folded in (so the zeros stay exact). No output-channel
// blocking: GMP weights are unstructured, and a 4x1 block at 75% random sparsity is non-empty
// with probability 1-0.75^4 = 68%, i.e. ~2.7x more multiply-adds than the CSR rows; the kernel
// instead gets its independent FMA chains from a wide pixel tile and a 2x unrolled nnz loop.
#pragma once
#include <cstdint>

namespace picosparse {

enum Act : int { ACT_NONE = 0, ACT_RELU = 1, ACT_HSWISH = 2, ACT_HSIGMOID = 3, ACT_LEAKY = 4 };
enum Isa : int { ISA_PORTABLE = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 };

struct SparseWeights {
    int cout = 0, cin = 0;
    const int32_t* rowptr = nullptr;  // cout + 1
    const int32_t* cols = nullptr;    // rowptr[cout]
    const float* vals = nullptr;      // rowptr[cout]
    const float* bias = nullptr;      // cout, may be null (= 0)
    int act = ACT_NONE;
    float alpha = 0.f, beta = 0.f;    // hsigmoid: clamp(alpha*v+beta, 0, 1); leaky: slope alpha
};

// Best ISA this CPU supports, or the one forced by PICOSPARSE_ISA (avx512|avx2|portable).
// Returns -1 and fills *err if the forced ISA is unknown or unsupported here.
int select_isa(const char** err);
bool cpu_supports(int isa);
const char* isa_name(int isa);

// x: [n, cin, hw], y: [n, cout, hw]. threads <= 0: use the current TBB arena's concurrency
// (inside OpenVINO that is the plugin's thread count); threads >= 1: exactly that many.
void spconv1x1(const SparseWeights& w, const float* x, float* y, int n, int64_t hw, int isa,
               int threads);

// Depthwise KxK convolution (groups == channels), NCHW fp32, BN folded into wt/bias, fused act.
// Exists so the sparse 1x1 ops' neighbours stay in plain NCHW: with OpenVINO's own depthwise
// conv the CPU plugin puts a layout reorder on both sides of every sparse op.
struct DepthwiseParams {
    int c = 0, h = 0, w = 0, k = 0, stride = 1;
    int pad_t = 0, pad_l = 0, pad_b = 0, pad_r = 0;
    const float* wt = nullptr;    // [c, k, k]
    const float* bias = nullptr;  // [c], may be null
    int act = ACT_NONE;
    float alpha = 0.f, beta = 0.f;
    int out_h() const { return (h + pad_t + pad_b - k) / stride + 1; }
    int out_w() const { return (w + pad_l + pad_r - k) / stride + 1; }
};

void dwconv(const DepthwiseParams& p, const float* x, float* y, int n, int isa, int threads);

}  // namespace picosparse
