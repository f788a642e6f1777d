// Direct KxK convolution in plain NCHW: depthwise convs and small dense convs (PicoDet's 3-channel
// stem) next to the sparse 1x1 ops, so OpenVINO never has to reorder layouts around them.
//
// Layout trick: each input channel is zero-padded and split by stride phase into s*s sub-planes
// (sub-plane (py, px)[i][j] = padded[s*i + py][s*j + px]) of width ws = wo + (k-1)/s. Output
// (oy, ox) is computed at flat index oy*ws + ox for every ox < ws (the ws - wo extra columns are
// dropped on store), and tap (ky, kx) then reads sub-plane (ky%s, kx%s) at flat index + a constant
// offset: every tap of every output row is one contiguous, vectorisable run, whatever the map
// size (10x10 and 5x5 maps fill whole vectors across rows instead of 10 of 16 lanes).
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "api.h"
#include "bf16.h"
#include "parallel.h"
#include "per_isa.h"
#include "simd.h"

namespace picosparse {
namespace {

struct RowRange {  // output rows [begin, end) computed, stored at row - row0
    int begin, end, row0;
};

struct ConvPlan {
    int hs = 0, ws = 0;          // sub-plane rows / width
    int64_t plane = 0;           // floats per sub-plane, incl. the zero slack full vectors read
    int ntaps = 0;               // (cin / groups) * k * k
    int ocb = 1;                 // output channels per register block
    std::vector<int64_t> off;    // per tap: offset of its first input in a group's planes
};

// The generic path's sub-planes: hs = ho + (k-1)/s rows of ws = wo + (k-1)/s rounded up to
// the vector width (aligned rows) floats, plus zero slack. (The fast path reads x directly.)
ConvPlan make_plan(const ConvParams& p, int vec) {
    ConvPlan g;
    const int s = p.stride, kq = (p.k - 1) / s, cin_g = p.cin / p.groups;
    g.hs = p.out_h() + kq;
    g.ws = (p.out_w() + kq + vec - 1) / vec * vec;
    // slack: the last row's shifted / full-vector reads run up to kq + 2 vectors past hs*ws
    g.plane = ((int64_t)g.hs * g.ws + kq + 2 * 16 + 15) & ~int64_t(15);
    g.ntaps = cin_g * p.k * p.k;
    const int cout_g = p.cout / p.groups;
    // 4 output channels per register block (each loaded input vector feeds 4 FMAs) where
    // groups have >= 4 of them (dense convs too big for the per-row GEMM); the fast path has
    // that for 3x3 stride 2 only
    g.ocb = cout_g % 4 == 0 && p.k != 5 ? 4 : 1;
    g.off.resize(g.ntaps);
    for (int c = 0; c < cin_g; ++c)
        for (int ky = 0; ky < p.k; ++ky)
            for (int kx = 0; kx < p.k; ++kx)
                g.off[(c * p.k + ky) * p.k + kx] =
                    ((int64_t)c * s * s + (ky % s) * s + kx % s) * g.plane +
                    (int64_t)(ky / s) * g.ws + kx / s;
    return g;
}

// Dense convs this small (taps per output channel) run as per-row GEMMs (gemm_rows): the im2col
// patch of a row chunk stays in L1.
constexpr int kGemmMaxK = 7, kGemmMaxTaps = 256;
bool uses_gemm(const ConvParams& p) {
    return p.groups == 1 && p.k <= kGemmMaxK && p.cin * p.k * p.k <= kGemmMaxTaps;
}

// The convs dw_blocked runs: depthwise 3x3 / 5x5, stride 1 / 2, no pool.
bool blockable(const ConvParams& p) {
    return p.groups == p.cin && p.cin == p.cout && p.pool_k == 0 && (p.k == 3 || p.k == 5) &&
           (p.stride == 1 || p.stride == 2);
}

// With NCHW in and out, worth the two transposes where NCHW rows leave most vector lanes empty;
// measured: every <= 10x10 output, and 5x5 kernels up to 20x20 (3x3 ones at 20x20 broke even:
// the transposes cost what the full lanes save).
bool uses_blocked(const ConvParams& p) {
    const int64_t out_hw = (int64_t)p.out_h() * p.out_w();
    return blockable(p) && (out_hw <= 100 || (p.k == 5 && out_hw <= 400));
}

// conv_fast_any's cases (kept in step with it)
bool has_fast_path(const ConvParams& p, const ConvPlan& g) {
    switch (p.k * 100 + p.stride * 10 + g.ocb) {
        case 311: case 321: case 511: case 521: case 324: return true;
    }
    return false;
}

#define PICOSPARSE_KERNEL_BODY "conv2d_impl.inc"
#include "per_isa.inc"
#undef PICOSPARSE_KERNEL_BODY

}  // namespace

const char* conv_layout_error(const ConvParams& p, int isa) {
    if ((p.in_blocked || p.out_blocked) && (!blockable(p) || p.cin % vector_width(isa)))
        return "blocked layout needs a 3x3/5x5 stride 1/2 depthwise conv without pool, channels "
               "divisible by the vector width (16 avx512, 8 avx2, 4 portable)";
    return nullptr;
}

void conv2d(const ConvParams& p, const float* x, float* y, int n, int isa, int threads) {
    if (n <= 0 || p.cout <= 0 || p.final_h() <= 0 || p.final_w() <= 0) return;
    // BF16 only where this call has it (the per-ISA code reads p.bf16 as "run it"): the stem's
    // GEMM. The depthwise convs stay FP32: pairing their taps needs a bf16 copy of each plane
    // (pairs of neighbours), and with that copy 3x3 ones ran 0.5-1.05x and 5x5 ones 1.1x of
    // FP32 (in the op: the FP32 path reads its inputs straight from registers).
    const bool bf16 = p.bf16 && bf16_runs(isa) && uses_gemm(p);
    if (bool(p.bf16) != bf16 || (bf16 && !p.wt_pairs)) {
        ConvParams q = p;
        q.bf16 = bf16;
        std::vector<uint32_t> pairs;
        if (bf16) {
            const int ntaps = p.cin / p.groups * p.k * p.k;
            pairs.resize((size_t)p.cout * ((ntaps + 1) / 2));
            bf16_tap_pairs(p.wt, p.cout, ntaps, pairs.data());
            q.wt_pairs = pairs.data();
        }
        return conv2d(q, x, y, n, isa, threads);
    }
    const int vec = vector_width(isa);
    // tasks = image x band of kBandRows final rows: band(img, band index, kBandRows, act)
    const auto by_bands = [&](const auto& band) {
        constexpr int kBandRows = 8;
        const int bands = (p.final_h() + kBandRows - 1) / kBandRows;
        const Activation a = p.act;
        parallel_ranges((int64_t)n * bands, threads, [&](int64_t t0, int64_t t1) {
            FlushDenormals ftz;
            for (int64_t t = t0; t < t1; ++t) band(t / bands, (int)(t % bands), kBandRows, a);
        });
    };
    if (uses_gemm(p)) {
        auto* gemm = PICOSPARSE_PER_ISA(isa, gemm_band);
        return by_bands([&](int64_t img, int b, int rows, const Activation& a) {
            gemm(p, x, y, img, b, rows, a);
        });
    }
    if (p.in_blocked || p.out_blocked || uses_blocked(p)) {  // (callers check the shape)
        // where each input pixel's channel vector goes in the padded [hp][wp][vec] buffer
        std::vector<int32_t> dtab(p.in_blocked ? 0 : (size_t)p.h * p.w);
        const int wp = p.w + p.pad_l + p.pad_r;
        for (int r = 0, q = 0; r < p.h && !p.in_blocked; ++r)
            for (int c = 0; c < p.w; ++c, ++q) dtab[q] = ((r + p.pad_t) * wp + c + p.pad_l) * vec;
        auto* blocked = PICOSPARSE_PER_ISA(isa, dw_blocked_any);
        const int blocks = (p.cin + vec - 1) / vec, ho = p.out_h();
        // too few (image, block) tasks for the threads (LCNet's 16-channel 160x160 map is one
        // block): bands of output rows too, each padding its own input rows (the halo rows
        // are copied twice, so one thread keeps whole images: measured 3-8% faster)
        int rows = ho;
        const int nt = resolve_threads(threads);
        const int64_t want = 2 * (int64_t)nt;
        if (nt > 1 && (int64_t)n * blocks < want && ho >= 16)
            rows = (int)std::max<int64_t>(4, (ho * (int64_t)n * blocks + want - 1) / want);
        const int bands = (ho + rows - 1) / rows;
        const Activation a = p.act;
        return parallel_ranges(
            (int64_t)n * blocks * bands, threads, [&](int64_t t0, int64_t t1) {
                FlushDenormals ftz;
                for (int64_t t = t0; t < t1; ++t) {
                    const int band = (int)(t % bands);
                    const int64_t ib = t / bands;
                    blocked(p, x, y, ib / blocks, (int)(ib % blocks), band * rows,
                            std::min(ho, band * rows + rows), dtab.data(), a);
                }
            });
    }
    const ConvPlan g = make_plan(p, vec);
    auto* tasks = PICOSPARSE_PER_ISA(isa, conv_tasks);
    if (p.pool_k && has_fast_path(p, g)) {  // conv + max pool: by bands of pooled rows
        auto* pool = PICOSPARSE_PER_ISA(isa, conv_pool_band);
        return by_bands([&](int64_t img, int b, int rows, const Activation& a) {
            pool(p, g, x, y, img, b, rows, a);
        });
    }
    const int64_t total = (int64_t)n * p.groups * (p.cout / p.groups / g.ocb);
    parallel_ranges(total, threads,
                    [&](int64_t t0, int64_t t1) { tasks(p, g, x, y, t0, t1); });
}

}  // namespace picosparse
