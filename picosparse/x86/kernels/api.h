// The kernels' C++ API, for the OpenVINO ops (openvino/extension.cpp) and the C API
// (openvino/capi.cpp): the sparse 1x1 convolution with its input readers and output writers,
// the dense NCHW KxK convolution, upsampling and concat + channel shuffle. NCHW fp32.
#pragma once
#include <cstdint>
#include <vector>

#include "activation.h"

namespace picosparse {

enum Isa : int { ISA_PORTABLE = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 };

// Best ISA this CPU supports, or the one forced by PICOSPARSE_ISA (avx512|avx2|portable).
// Returns -1 and fills *err if the forced ISA is unknown or unsupported here.
int select_isa(const char** err);
bool cpu_supports(int isa);
const char* isa_name(int isa);

// The "blocked" layout, for tensors passed between two picosparse ops: [N, C / B, H * W, B]
// with B = the vector width of the ISA in use (16 / 8 / 4 floats), C a multiple of B, so that
// a depthwise conv writes whole pixels' channel vectors as computed.
int vector_width(int isa);

// ------------------------------------------------------------------ sparse 1x1 convolution
// y[n, r, p] = act(bias[r] + sum_k vals[k] * x[n, cols[k], p]) for k in [rowptr[r], rowptr[r+1]).
//
// Weight format ("row CSR"): one CSR row per output channel, int32 column indices into the input
// channels, fp32 values with BN already folded in (so the zeros stay exact). No output-channel
// blocking: GMP weights are unstructured, and a 4x1 block at 75% random sparsity is non-empty
// with probability 1-0.75^4 = 68%, i.e. ~2.7x more multiply-adds than the CSR rows; the kernel
// instead gets its independent FMA chains from a wide pixel tile and a 2x unrolled nnz loop.
//
// Split as XNNPACK splits microkernel and operator: one microkernel computes rows of a packed
// pixel tile (activation applied on the way out, like a oneDNN post-op); an input reader packs
// the tile from x's layout (SparseInput), an output writer puts the rows where the graph wants
// them (SparseOutput). Which readers and writers combine: sparse1x1_error, the one list.
struct SparseConv {
    int cout = 0, cin = 0;
    const int32_t* rowptr = nullptr;  // cout + 1
    const int32_t* cols = nullptr;    // rowptr[cout]
    const float* vals = nullptr;      // rowptr[cout]
    const float* bias = nullptr;      // cout, may be null (= 0)
    Activation act;
};

// How x is read: its layout, and a per-image channel gain folded into the weights.
struct SparseInput {
    const float* x = nullptr;  // [n, cin, hw]
    // x in the blocked layout instead of NCHW; with blocked, x's first nchw_prefix channels are
    // NCHW planes and only the rest blocked (a concat of an NCHW tensor and a blocked one,
    // ESNet's [pointwise, depthwise] ghost concat)
    int blocked = 0, nchw_prefix = 0;
    // optional [n, cin] per-image input channel gains, x[n, c] * gate[n * cin + c]: a
    // squeeze-excite gate folded into the weights (nnz multiplies per image instead of a pass
    // over the whole input tensor); null = none
    const float* gate = nullptr;
    // optional: the whole squeeze-excite block that makes that gate from x itself,
    // gate[n] = se_expand(se_reduce(mean over hw of x[n])), two sparse 1x1s on one pixel with
    // their own bias and activation (ESNet: relu, hsigmoid). Both or neither; no `gate` then.
    const SparseConv* se_reduce = nullptr;
    const SparseConv* se_expand = nullptr;
};

// Channels-last parts, for a detection head's last 1x1 conv whose channels are split into
// class scores and box distributions, each read as [N, H*W, C]: part k takes the next
// channels[k] output channels (they sum to cout) into out[k] = [n, hw, channels[k]], through a
// sigmoid if sigmoid[k]. One pass instead of split + sigmoid + transpose after the conv.
struct ChannelsLast {
    int parts = 0;
    const int* channels = nullptr;
    const int* sigmoid = nullptr;
    float* const* out = nullptr;
    int64_t img_stride = 0;  // floats between images in out[k]; 0: hw * channels[k]
};

// Where y goes.
struct SparseOutput {
    enum Layout : int { NCHW = 0, BLOCKED = 1, CHANNELS_LAST = 2 } layout = NCHW;
    float* y = nullptr;  // NCHW / BLOCKED: [n, cout, hw] (interleaved: [n, 2 cout, hw])
    // NCHW only, optional [n, cout, hw]: y is then [n, 2 cout, hw], interleave's channel c at
    // 2c and this conv's output channel c at 2c + 1: ESNet's concat + 2-group channel shuffle,
    // without a pass of its own over the conv's output
    const float* interleave = nullptr;
    ChannelsLast parts;  // CHANNELS_LAST
};

// Null if this reader / writer combination runs on this ISA, else why not (one line).
const char* sparse1x1_error(const SparseConv& w, const SparseInput& in, const SparseOutput& out,
                            int isa);

// The BF16 form of a SparseConv, for CPUs with AVX512-BF16 (cpu_supports_bf16): input channels
// in pairs (2j, 2j + 1), one vdpbf16ps per pair and 16 pixels (two multiply-adds per lane, fp32
// accumulation). A row keeps a pair when either of its two weights is nonzero, so weights pruned
// in 1x2 blocks along the input channels (`sparse_block: [1, 2]`) run half the instructions of
// the fp32 kernel, and unstructured ones ~0.9x of them; the packed tile (bf16) is half the bytes.
// Activations are rounded to bf16 inside the kernel only: inputs and outputs stay fp32.
struct SparsePairs {
    int tw = 0;                  // the pixel tile width the offsets are for
    std::vector<int32_t> rowptr;  // cout + 1, over pairs
    std::vector<int32_t> offs;    // per pair: its pair index * 2 * tw (bf16s into a packed tile)
    std::vector<uint32_t> vals;   // per pair: bf16(w[2j]) | bf16(w[2j + 1]) << 16
    // fp32 values in pair order, 2 per pair (0 where a pair has one weight), and the input
    // channel each multiplies: a squeeze-excite gate scales them per image, 32 at a time
    std::vector<float> fvals;
    std::vector<int32_t> fch;
    // every row holds every pair, in order (a kept-dense conv, e.g. a head's output conv): the
    // kernel then computes rows several at a time, each tile load feeding all of them
    bool dense = false;
};
bool cpu_supports_bf16();
// The BF16 kernel runs on this ISA path: AVX-512 selected and the CPU has AVX512-BF16
inline bool bf16_runs(int isa) { return isa == ISA_AVX512 && cpu_supports_bf16(); }
// The pair form of w for tile width tw (sp_tile_width(isa, cin, hw, true)), computed once per
// op and kept.
void sp_pairs(const SparseConv& w, int tw, SparsePairs* out);

// threads <= 0: use the current TBB arena's concurrency (inside OpenVINO that
// is the plugin's thread count); threads >= 1: exactly that many. offs: optional,
// sp_offsets(w, sp_tile_width(isa, w.cin, hw)) kept from an earlier call (the OpenVINO op
// caches it: computing it is a pass over the weights, allocating it a page-faulting malloc for
// large layers, on every call); null: computed here.
// pairs: optional, sp_pairs(w, tw): run the BF16 kernel (AVX-512 with BF16 only; elsewhere the
// fp32 one runs, with offs).
void sparse1x1(const SparseConv& w, const SparseInput& in, const SparseOutput& out, int n,
               int64_t hw, int isa, int threads, const int32_t* offs = nullptr,
               const SparsePairs* pairs = nullptr);
// bf16: the BF16 kernel's (its packed tile is half the bytes: twice as wide for a wide Cin)
int sp_tile_width(int isa, int cin, int64_t hw, bool bf16 = false);
void sp_offsets(const SparseConv& w, int tw, int32_t* offs);  // offs[k] = cols[k] * tw

// ------------------------------------------------------------------ dense NCHW ops
// Direct KxK convolution (any groups dividing cin and cout), NCHW fp32, BN folded into wt/bias,
// fused activation: depthwise convs (groups == cin == cout) and small dense ones (the stem).
// Exists so the sparse 1x1 ops' neighbours stay in plain NCHW: with OpenVINO's own convs the
// CPU plugin puts a layout reorder on both sides of every sparse op.
struct ConvParams {
    int cin = 0, cout = 0, groups = 1, h = 0, w = 0, k = 0, stride = 1;
    int pad_t = 0, pad_l = 0, pad_b = 0, pad_r = 0;
    const float* wt = nullptr;    // [cout, cin / groups, k, k]
    const float* bias = nullptr;  // [cout], may be null
    Activation act;
    // optional max pool fused after the activation (PicoDet's stem: conv 3x3/2 + maxpool 3x3/2;
    // fused, the conv's output never leaves the cache): pool_k = 0 means none
    int pool_k = 0, pool_s = 1, pool_pad_t = 0, pool_pad_l = 0, pool_pad_b = 0, pool_pad_r = 0;
    // channel-blocked input / output instead of NCHW (see vector_width); depthwise only
    int in_blocked = 0, out_blocked = 0;
    // 1: in BF16 where conv2d has it (the small dense convs of its per-row GEMM: the stem) and
    // the CPU runs it (bf16_runs): inputs and weights rounded to bf16, fp32 sums. conv2d fills
    // wt_pairs (the weights as bf16 pairs of taps) for the kernel.
    int bf16 = 0;
    const uint32_t* wt_pairs = nullptr;
    int out_h() const { return (h + pad_t + pad_b - k) / stride + 1; }
    int out_w() const { return (w + pad_l + pad_r - k) / stride + 1; }
    int final_h() const {
        return pool_k ? (out_h() + pool_pad_t + pool_pad_b - pool_k) / pool_s + 1 : out_h();
    }
    int final_w() const {
        return pool_k ? (out_w() + pool_pad_l + pool_pad_r - pool_k) / pool_s + 1 : out_w();
    }
};

// Null if the layouts p asks for can run on this ISA, else why not (one line). Blocked
// layouts need channels divisible by the vector width, and a 3x3 / 5x5, stride 1 / 2
// depthwise conv without a pool.
const char* conv_layout_error(const ConvParams& p, int isa);

// y: [n, cout, final_h, final_w]
void conv2d(const ConvParams& p, const float* x, float* y, int n, int isa, int threads);

// y[p, r, c] = x[p, r / fh, c / fw] over `planes` planes of h x w (nearest, integer factors)
void upsample_nearest(const float* x, float* y, int64_t planes, int h, int w, int fh, int fw,
                      int threads);

// y = channel shuffle (2 groups) of concat(a, b) over channels: y[n, 2i] = a[n, i],
// y[n, 2i + 1] = b[n, i]; a, b: [n, c, hw], y: [n, 2c, hw]
void concat_shuffle(const float* a, const float* b, float* y, int n, int c, int64_t hw,
                    int threads);

}  // namespace picosparse
