// Sparse 1x1 convolution (see spconv.h for the format) and the run-time ISA choice. Compiled for
// baseline x86-64; the kernel body (spconv_impl.inc) is instantiated once per ISA inside a
// `#pragma GCC target` region, so one library runs on any x86-64 CPU.
#include "spconv.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "parallel.h"
#include "simd.h"

namespace picosparse {

bool cpu_supports(int isa) {
    // detected once: CPUID traps to the hypervisor in a VM (measured ~25 us per kernel call
    // when this ran on every call)
    static const bool avx2 = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }();
    static const bool avx512 = [] {
        __builtin_cpu_init();
        return (bool)__builtin_cpu_supports("avx512f");
    }();
    switch (isa) {
        case ISA_PORTABLE: return true;
        case ISA_AVX2: return avx2;
        case ISA_AVX512: return avx512;
    }
    return false;
}

const char* isa_name(int isa) {
    switch (isa) {
        case ISA_PORTABLE: return "portable";
        case ISA_AVX2: return "avx2";
        case ISA_AVX512: return "avx512";
    }
    return "?";
}

int select_isa(const char** err) {
    // read on every call (a getenv is ~100 ns) so tests can switch paths inside one process
    const char* forced = std::getenv("PICOSPARSE_ISA");
    if (forced && *forced && std::strcmp(forced, "auto") != 0) {
        for (int isa : {ISA_PORTABLE, ISA_AVX2, ISA_AVX512}) {
            if (std::strcmp(forced, isa_name(isa)) == 0) {
                if (cpu_supports(isa)) return isa;
                if (err) *err = "PICOSPARSE_ISA names an ISA this CPU does not support";
                return -1;
            }
        }
        if (err) *err = "PICOSPARSE_ISA must be one of avx512, avx2, portable, auto";
        return -1;
    }
    if (cpu_supports(ISA_AVX512)) return ISA_AVX512;
    if (cpu_supports(ISA_AVX2)) return ISA_AVX2;
    return ISA_PORTABLE;
}

namespace {

struct SpPlan {
    int tw = 16;                    // pixel tile width (floats): NV vectors
    int64_t tiles = 1;              // pixel tiles per image
    int rchunks = 1;                // row chunks per tile (threads on small maps)
    const int32_t* offs = nullptr;  // per nonzero: cols[k] * tw, its row in a packed tile
    int64_t yrow = 0;               // floats between NCHW output rows: hw, 2 hw (shuffle_with)
    // Always packed: x's channel rows sit hw floats apart, a stride that maps a tile's channels
    // onto a few L1 sets (80x80: 3-4x slower unpacked) and, even where they spread over the
    // sets (40x40), puts each row on its own page (measured 10-15% slower than packing).
};

// As wide as the vector registers allow (4 vectors) while the packed [cin][tw] tile stays in
// L1 where possible, and no wider than the image needs.
int tile_width(int vec, int cin, int64_t hw) {
    int tw = 4 * vec;
    // not below 2 vectors: at 1 vector each FMA needs its own broadcast load too, which cost
    // more than the L2 hits of a 64 KB tile (measured on 512-channel 10x10 layers)
    while (tw > 2 * vec && (int64_t)cin * tw * 4 > 32 * 1024) tw /= 2;
    while (tw > vec && tw / 2 >= hw) tw /= 2;
    // maps of 5-vector multiples but not 4 (20x20 = 5 x 80): 5-vector tiles, no tail tile
    // (whose single vector per nonzero still pays the offset and value loads)
    if (tw == 4 * vec && hw % (4 * vec) != 0 && hw % (5 * vec) == 0 &&
        (int64_t)cin * 5 * vec * 4 <= 48 * 1024)
        tw = 5 * vec;
    return tw;
}

namespace portable {
using V = VPortable;
#include "spconv_impl.inc"
}  // namespace portable

namespace avx2 {
#pragma GCC push_options
#pragma GCC target("avx2,fma")
using V = VAvx2;
#include "spconv_impl.inc"
#pragma GCC pop_options
}  // namespace avx2

namespace avx512 {
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
using V = VAvx512;
#include "spconv_impl.inc"
#pragma GCC pop_options
}  // namespace avx512

}  // namespace

int vector_width(int isa) {
    return isa == ISA_AVX512 ? VAvx512::N : isa == ISA_AVX2 ? VAvx2::N : VPortable::N;
}

const char* sp_layout_error(const SparseWeights& w, int isa) {
    const int b = vector_width(isa);
    if (w.in_nchw && (!w.in_blocked || w.in_nchw < 0 || w.in_nchw >= w.cin))
        return "in_nchw must lie inside a blocked input's channels";
    if ((w.in_blocked && (w.cin - w.in_nchw) % b) || (w.out_blocked && w.cout % b))
        return "blocked layout needs channels divisible by the vector width (16 avx512, 8 avx2, "
               "4 portable)";
    if (w.shuffle_with && w.out_blocked) return "a shuffled output must be NCHW";
    return nullptr;
}

int sp_tile_width(int isa, int cin, int64_t hw) { return tile_width(vector_width(isa), cin, hw); }

void sp_offsets(const SparseWeights& w, int tw, int32_t* offs) {
    for (int k = 0, nnz = w.rowptr[w.cout]; k < nnz; ++k) offs[k] = w.cols[k] * tw;
}

namespace {

float act_scalar(float v, const SparseWeights& w) {
    switch (w.act) {
        case ACT_RELU: return v > 0.f ? v : 0.f;
        case ACT_HSWISH: return v * std::min(std::max(v / 6.f + 0.5f, 0.f), 1.f);
        case ACT_HSIGMOID: return std::min(std::max(w.alpha * v + w.beta, 0.f), 1.f);
        case ACT_LEAKY: return v > 0.f ? v : w.alpha * v;
    }
    return v;
}

// spconv1x1 and spconv1x1_nlc: y (NCHW) or o (staged, transposed outputs) is the destination
void run(const SparseWeights& w, const float* x, float* y, const NlcOut* o, int n, int64_t hw,
         int isa, int threads, const int32_t* offs) {
    if (n <= 0 || hw <= 0 || w.cout <= 0) return;
    SpPlan g;
    g.tw = sp_tile_width(isa, w.cin, hw);
    g.tiles = (hw + g.tw - 1) / g.tw;
    std::vector<int32_t> local;
    if (!offs) {
        local.resize((size_t)w.rowptr[w.cout]);
        sp_offsets(w, g.tw, local.data());
        offs = local.data();
    }
    g.offs = offs;
    g.yrow = w.shuffle_with ? 2 * hw : hw;
    if (y && w.shuffle_with) {  // shuffle_with's planes to the even channels; ours go between
        const float* a = w.shuffle_with;
        parallel_ranges((int64_t)n * w.cout, threads, [&](int64_t p0, int64_t p1) {
            for (int64_t p = p0; p < p1; ++p)
                std::memcpy(y + 2 * p * hw, a + p * hw, sizeof(float) * hw);
        });
        y += hw;
    }
    const int nt = resolve_threads(threads);
    // too few pixel tiles to feed every thread (small feature maps): also split the rows
    // (NCHW output only: a staged tile needs all its rows in one task)
    if (!o && nt > 1 && g.tiles * n < 4 * nt)
        g.rchunks = (int)std::max<int64_t>(
            1, std::min<int64_t>((4 * nt + g.tiles * n - 1) / (g.tiles * n), w.cout / 8));
    auto* tasks = PICOSPARSE_PER_ISA(isa, sp_tasks);
    auto* staged = PICOSPARSE_PER_ISA(isa, sp_tasks_nlc);
    // images [img0, img0 + nimg) with weights wi
    const auto images = [&](const SparseWeights& wi, int64_t img0, int nimg) {
        parallel_ranges(g.tiles * g.rchunks * nimg, threads, [&](int64_t t0, int64_t t1) {
            if (o) staged(wi, g, x, *o, hw, img0, t0, t1);
            else tasks(wi, g, x + img0 * w.cin * hw, y + img0 * w.cout * g.yrow, nimg, hw, t0, t1);
        });
    };
    const bool se = w.se_reduce && w.se_expand;
    if (!w.gate && !se) return images(w, 0, n);
    // gated input: each image with its own scaled copy of the values
    const int nnz = w.rowptr[w.cout];
    float* scaled = scratch<6>((size_t)nnz + 1);  // the caller's thread, reused per call
    float* squeeze = se ? scratch<10>((size_t)2 * w.cin + w.se_reduce->cout) : nullptr;
    auto* means = PICOSPARSE_PER_ISA(isa, channel_means);
    auto* matvec = PICOSPARSE_PER_ISA(isa, sparse_matvec);
    auto* scale = PICOSPARSE_PER_ISA(isa, scale_values);
    // y = act(W x + b) on one pixel: the squeeze-excite block's 1x1 convs
    const auto conv = [&](const SparseWeights& sw, const float* in, float* out) {
        matvec(sw, in, out);
        for (int r = 0; r < sw.cout; ++r) out[r] = act_scalar(out[r], sw);
    };
    SparseWeights wi = w;
    wi.gate = nullptr;
    wi.se_reduce = wi.se_expand = nullptr;
    wi.vals = scaled;
    for (int i = 0; i < n; ++i) {
        const float* gain = se ? squeeze + w.cin + w.se_reduce->cout : w.gate + (int64_t)i * w.cin;
        if (se) {  // squeeze (a pass over x[i]), then the two tiny convs
            const float* xi = x + i * (int64_t)w.cin * hw;
            // units of work: the NCHW channels one by one, then the blocked ones b at a time
            const int nchw = w.in_blocked ? w.in_nchw : w.cin;
            const int b = vector_width(isa), units = nchw + (w.cin - nchw) / b;
            const float* xb = xi + (int64_t)nchw * hw;
            parallel_ranges(units, threads, [&](int64_t u0, int64_t u1) {
                if (u0 < nchw) means(xi, hw, (int)u0, (int)std::min<int64_t>(u1, nchw), 0, squeeze);
                if (u1 > nchw)
                    means(xb, hw, (int)(std::max<int64_t>(u0, nchw) - nchw) * b,
                          (int)(u1 - nchw) * b, 1, squeeze + nchw);
            });
            conv(*w.se_reduce, squeeze, squeeze + w.cin);
            conv(*w.se_expand, squeeze + w.cin, squeeze + w.cin + w.se_reduce->cout);
        }
        scale(w, gain, scaled);
        images(wi, i, 1);
    }
}

}  // namespace

void spconv1x1(const SparseWeights& w, const float* x, float* y, int n, int64_t hw, int isa,
               int threads, const int32_t* offs) {
    if (!w.out_blocked) return run(w, x, y, nullptr, n, hw, isa, threads, offs);
    // blocked output: a staged output whose parts are the channel blocks
    const int b = vector_width(isa), parts = w.cout / b;
    std::vector<int> channels(parts, b), sigmoid(parts, 0);
    std::vector<float*> out(parts);
    for (int k = 0; k < parts; ++k) out[k] = y + (int64_t)k * hw * b;
    NlcOut o;
    o.parts = parts, o.channels = channels.data(), o.sigmoid = sigmoid.data(), o.out = out.data();
    o.img_stride = (int64_t)w.cout * hw;
    run(w, x, nullptr, &o, n, hw, isa, threads, offs);
}

void spconv1x1_nlc(const SparseWeights& w, const float* x, const NlcOut& o, int n, int64_t hw,
                   int isa, int threads, const int32_t* offs) {
    run(w, x, nullptr, &o, n, hw, isa, threads, offs);
}

}  // namespace picosparse

