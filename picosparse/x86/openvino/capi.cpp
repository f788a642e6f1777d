// A tiny C API over the kernels (for ctypes: picosparse/x86/kernel.py, the tests and per-kernel
// benchmarks), in the same shared library as the OpenVINO ops.
#include <cstdio>
#include <cstring>

#include "../kernels/api.h"

namespace {

// The ISA to use, or -1 with PICOSPARSE_ISA's problem in err
int pick_isa(char* err, int errlen) {
    const char* e = nullptr;
    const int isa = picosparse::select_isa(&e);
    if (isa < 0 && err && errlen > 0) std::snprintf(err, (size_t)errlen, "%s", e);
    return isa;
}

int refuse(const char* why, char* err, int errlen) {
    if (err && errlen > 0) std::snprintf(err, (size_t)errlen, "%s", why);
    return -1;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) int ps_cpu_supports(int isa) {
    return picosparse::cpu_supports(isa) ? 1 : 0;
}

// The ISA the next call would use (honours PICOSPARSE_ISA); -1 if the variable is invalid.
__attribute__((visibility("default"))) int ps_select_isa() {
    return picosparse::select_isa(nullptr);
}

// The code of an activation name (activation.h's table), -1 if there is none.
__attribute__((visibility("default"))) int ps_activation_code(const char* name) {
    return picosparse::act_code(name);
}

// 1 if the next call with bf16 would run the BF16 kernel (honours PICOSPARSE_ISA)
__attribute__((visibility("default"))) int ps_bf16_runs() {
    const int isa = picosparse::select_isa(nullptr);
    return isa >= 0 && picosparse::bf16_runs(isa) ? 1 : 0;
}

// y = act(W (x * gate) + b); layout bit 0: x blocked, bit 1: y blocked; bf16: the BF16 kernel
// where it runs (ps_bf16_runs). Returns the ISA used (>= 0), or
// -1 with a message in err.
__attribute__((visibility("default"))) int ps_spconv1x1(
    const int32_t* rowptr, const int32_t* cols, const float* vals, const float* bias, int cout,
    int cin, int act, float alpha, float beta, const float* gate, const float* x, float* y, int n,
    int64_t hw, int threads, int layout, int bf16, char* err, int errlen) {
    const int isa = pick_isa(err, errlen);
    if (isa < 0) return -1;
    picosparse::SparseConv w;
    w.cout = cout, w.cin = cin, w.rowptr = rowptr, w.cols = cols, w.vals = vals, w.bias = bias;
    w.act = picosparse::Activation{act, alpha, beta};
    picosparse::SparseInput in;
    in.x = x, in.gate = gate, in.blocked = layout & 1;
    picosparse::SparseOutput out;
    out.y = y;
    out.layout = (layout >> 1) & 1 ? picosparse::SparseOutput::BLOCKED
                                   : picosparse::SparseOutput::NCHW;
    if (const char* why = picosparse::sparse1x1_error(w, in, out, isa))
        return refuse(why, err, errlen);
    picosparse::SparsePairs pairs;
    if (bf16) picosparse::sp_pairs(w, picosparse::sp_tile_width(isa, cin, hw, true), &pairs);
    picosparse::sparse1x1(w, in, out, n, hw, isa, threads < 1 ? 1 : threads, nullptr,
                          bf16 ? &pairs : nullptr);
    return isa;
}

// Direct conv (weights [cout, cin/groups, k, k]); pads = {top, left, bottom, right}; pool =
// null or {k, stride, pad top, left, bottom, right} of a fused max pool. Returns the ISA used
// or -1 (see above).
__attribute__((visibility("default"))) int ps_conv2d(
    const float* wt, const float* bias, int cin, int cout, int groups, int h, int w, int k,
    int stride, const int* pads, int act, float alpha, float beta, const int* pool,
    const float* x, float* y, int n, int threads, int layout, int bf16, char* err, int errlen) {
    const int isa = pick_isa(err, errlen);
    if (isa < 0) return -1;
    picosparse::ConvParams p;
    p.cin = cin, p.cout = cout, p.groups = groups, p.h = h, p.w = w, p.k = k, p.stride = stride;
    p.pad_t = pads[0], p.pad_l = pads[1], p.pad_b = pads[2], p.pad_r = pads[3];
    p.wt = wt, p.bias = bias, p.act = picosparse::Activation{act, alpha, beta};
    if (pool) {
        p.pool_k = pool[0], p.pool_s = pool[1];
        p.pool_pad_t = pool[2], p.pool_pad_l = pool[3], p.pool_pad_b = pool[4];
        p.pool_pad_r = pool[5];
    }
    p.in_blocked = layout & 1, p.out_blocked = (layout >> 1) & 1;
    p.bf16 = bf16 ? 1 : 0;
    if (const char* why = picosparse::conv_layout_error(p, isa)) return refuse(why, err, errlen);
    picosparse::conv2d(p, x, y, n, isa, threads < 1 ? 1 : threads);
    return isa;
}

}  // extern "C"
