// Sparse 1x1 convolution, the operator side (see api.h): plans the pixel tiles and threads,
// folds a squeeze-excite gate into the weights per image, and picks the reader / writer; the
// microkernel, readers and writers (sparse1x1_impl.inc) are instantiated per ISA.
#include <algorithm>
#include <cstring>
#include <vector>

#include "api.h"
#include "parallel.h"
#include "per_isa.h"
#include "simd.h"
#include "bf16.h"

namespace picosparse {

namespace {

struct SpPlan {
    int tw = 16;                    // pixel tile width (floats): NV vectors
    int64_t hw = 0;                 // pixels per image
    int64_t tiles = 1;              // pixel tiles per image
    int rchunks = 1;                // row chunks per tile (threads on small maps)
    const int32_t* offs = nullptr;  // per nonzero: cols[k] * tw, its row in a packed tile
    const SpBf16* bf = nullptr;     // the BF16 kernel's pairs, or null: the fp32 kernel
    // Always packed: x's channel rows sit hw floats apart, a stride that maps a tile's channels
    // onto a few L1 sets (80x80: 3-4x slower unpacked) and, even where they spread over the
    // sets (40x40), puts each row on its own page (measured 10-15% slower than packing).
};

// An NCHW writer's destination: y, and the floats between its output rows (hw; 2 hw when
// every other channel is the interleaved tensor's)
struct NchwOut {
    float* y;
    int64_t row;
};

// As wide as the vector registers allow (4 vectors) while the packed [cin][tw] tile stays in
// L1 where possible, and no wider than the image needs.
int tile_width(int vec, int cin, int64_t hw, int bytes = 4) {
    int tw = 4 * vec;
    // not below 2 vectors: at 1 vector each FMA needs its own broadcast load too, which cost
    // more than the L2 hits of a 64 KB tile (measured on 512-channel 10x10 layers)
    while (tw > 2 * vec && (int64_t)cin * tw * bytes > 32 * 1024) tw /= 2;
    while (tw > vec && tw / 2 >= hw) tw /= 2;
    // maps of 5-vector multiples but not 4 (20x20 = 5 x 80): 5-vector tiles, no tail tile
    // (whose single vector per nonzero still pays the offset and value loads)
    if (tw == 4 * vec && hw % (4 * vec) != 0 && hw % (5 * vec) == 0 &&
        (int64_t)cin * 5 * vec * bytes <= 48 * 1024)
        tw = 5 * vec;
    return tw;
}

#define PICOSPARSE_KERNEL_BODY "sparse1x1_impl.inc"
#include "per_isa.inc"
#undef PICOSPARSE_KERNEL_BODY

}  // namespace

const char* sparse1x1_error(const SparseConv& w, const SparseInput& in, const SparseOutput& out,
                            int isa) {
    const int b = vector_width(isa);
    const bool se = in.se_reduce || in.se_expand;
    if (se && !(in.se_reduce && in.se_expand)) return "a squeeze-excite block needs both convs";
    if (se && in.gate) return "a gate input and a squeeze-excite block exclude each other";
    if (in.nchw_prefix && (!in.blocked || in.nchw_prefix < 0 || in.nchw_prefix >= w.cin))
        return "in_nchw must lie inside a blocked input's channels";
    if ((in.blocked && (w.cin - in.nchw_prefix) % b) ||
        (out.layout == SparseOutput::BLOCKED && w.cout % b))
        return "blocked layout needs channels divisible by the vector width (16 avx512, 8 avx2, "
               "4 portable)";
    if (out.interleave && out.layout != SparseOutput::NCHW) return "a shuffled output must be NCHW";
    if (out.layout == SparseOutput::CHANNELS_LAST) {
        if (in.gate || se) return "channels-last outputs take no gate / squeeze-excite block";
        int total = 0;
        for (int k = 0; k < out.parts.parts; ++k) total += out.parts.channels[k];
        if (total != w.cout) return "channels-last parts must sum to cout";
    }
    return nullptr;
}

int sp_tile_width(int isa, int cin, int64_t hw, bool bf16) {
    return tile_width(vector_width(isa), cin, hw, bf16 ? 2 : 4);
}

bool cpu_supports_bf16() {
    static const bool yes = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512bf16");
    }();
    return yes;
}

void sp_pairs(const SparseConv& w, int tw, SparsePairs* out) {
    const int nnz = w.rowptr[w.cout], npairs_in = (w.cin + 1) / 2;
    out->tw = tw;
    out->rowptr.assign((size_t)w.cout + 1, 0);
    out->offs.clear(), out->vals.clear();
    std::vector<int32_t> slot((size_t)nnz);
    std::vector<int32_t> at((size_t)npairs_in, -1);  // a pair's index in the current row
    for (int r = 0; r < w.cout; ++r) {
        const int first = (int)out->offs.size();
        for (int k = w.rowptr[r]; k < w.rowptr[r + 1]; ++k) {
            const int j = w.cols[k] / 2, half = w.cols[k] & 1;
            if (at[j] < first) {  // not seen in this row yet
                at[j] = (int)out->offs.size();
                out->offs.push_back(j * 2 * tw);
                out->vals.push_back(0);
            }
            out->vals[at[j]] |= bf16_bits(w.vals[k]) << (16 * half);
            slot[k] = 2 * at[j] + half;
        }
        out->rowptr[r + 1] = (int32_t)out->offs.size();
    }
    out->dense = out->offs.size() == (size_t)w.cout * npairs_in;
    for (size_t k = 0; out->dense && k < out->offs.size(); ++k)
        out->dense = out->offs[k] == (int32_t)(k % npairs_in) * 2 * tw;
    const size_t nslots = 2 * out->offs.size();
    out->fvals.assign(nslots, 0.f);
    out->fch.resize(nslots);
    for (size_t p = 0; p < out->offs.size(); ++p)  // pair p's channels, inside the input
        for (int h = 0; h < 2; ++h)
            out->fch[2 * p + h] = std::min(out->offs[p] / tw + h, w.cin - 1);
    for (int k = 0; k < nnz; ++k) out->fvals[slot[k]] = w.vals[k];
}

void sp_offsets(const SparseConv& w, int tw, int32_t* offs) {
    for (int k = 0, nnz = w.rowptr[w.cout]; k < nnz; ++k) offs[k] = w.cols[k] * tw;
}

namespace {

// y = act(W x + b) on one pixel: the squeeze-excite block's 1x1 convs (the portable
// activation: a few dozen values per image)
void se_conv(int isa, const SparseConv& sw, const float* in, float* out) {
    PICOSPARSE_PER_ISA(isa, sparse_matvec)(sw, in, out);
    for (int r = 0; r < sw.cout; ++r)
        out[r] = portable::activate(VPortable::set1(out[r]), sw.act)[0];
}

// sparse1x1 with the output as a writer takes it: NCHW (`nchw`) or channels-last parts (`cl`)
void run(const SparseConv& w, const SparseInput& in, const NchwOut* nchw, const ChannelsLast* cl,
         int n, int64_t hw, int isa, int threads, const int32_t* offs, const SparsePairs* pairs) {
    const float* x = in.x;
    SpPlan g;
    const bool bf16 = pairs && bf16_runs(isa);
    g.tw = bf16 ? pairs->tw : sp_tile_width(isa, w.cin, hw);
    g.hw = hw;
    g.tiles = (hw + g.tw - 1) / g.tw;
    std::vector<int32_t> local;
    if (!offs && !bf16) {
        local.resize((size_t)w.rowptr[w.cout]);
        sp_offsets(w, g.tw, local.data());
        offs = local.data();
    }
    g.offs = offs;
    SpBf16 bf;
    if (bf16) {
        bf.rowptr = pairs->rowptr.data(), bf.offs = pairs->offs.data();
        bf.vals = pairs->vals.data();
        bf.dense_pairs = pairs->dense ? (w.cin + 1) / 2 : 0;
        g.bf = &bf;
    }
    const int nt = resolve_threads(threads);
    // too few pixel tiles to feed every thread (small feature maps): also split the rows
    // (NCHW output only: a staged tile needs all its rows in one task)
    if (nchw && nt > 1 && g.tiles * n < 4 * nt)
        g.rchunks = (int)std::max<int64_t>(
            1, std::min<int64_t>((4 * nt + g.tiles * n - 1) / (g.tiles * n), w.cout / 8));
    auto* to_nchw = PICOSPARSE_PER_ISA(isa, sp_tasks_nchw);
    auto* to_cl = PICOSPARSE_PER_ISA(isa, sp_tasks_channels_last);
    // images [img0, img0 + nimg) with weights wi
    const auto images = [&](const SparseConv& wi, int64_t img0, int nimg) {
        parallel_ranges(g.tiles * g.rchunks * nimg, threads, [&](int64_t t0, int64_t t1) {
            if (nchw) to_nchw(wi, in, g, x, *nchw, img0, t0, t1);
            else to_cl(wi, in, g, x, *cl, img0, t0, t1);
        });
    };
    const bool se = in.se_reduce && in.se_expand;
    if (!in.gate && !se) return images(w, 0, n);
    // gated input: each image with its own scaled copy of the values
    const int nnz = w.rowptr[w.cout];
    float* scaled = scratch<6>((size_t)nnz + 1);  // the caller's thread, reused per call
    float* squeeze = se ? scratch<10>((size_t)2 * w.cin + in.se_reduce->cout) : nullptr;
    auto* means = PICOSPARSE_PER_ISA(isa, channel_means);
    auto* scale = PICOSPARSE_PER_ISA(isa, scale_values);
    SparseConv wi = w;
    wi.vals = scaled;
    for (int i = 0; i < n; ++i) {
        const float* gain =
            se ? squeeze + w.cin + in.se_reduce->cout : in.gate + (int64_t)i * w.cin;
        if (se) {  // squeeze (a pass over x[i]), then the two tiny convs
            const float* xi = x + i * (int64_t)w.cin * hw;
            // units of work: the NCHW channels one by one, then the blocked ones b at a time
            const int nchw_ch = in.blocked ? in.nchw_prefix : w.cin;
            const int b = vector_width(isa), units = nchw_ch + (w.cin - nchw_ch) / b;
            const float* xb = xi + (int64_t)nchw_ch * hw;
            parallel_ranges(units, threads, [&](int64_t u0, int64_t u1) {
                if (u0 < nchw_ch)
                    means(xi, hw, (int)u0, (int)std::min<int64_t>(u1, nchw_ch), 0, squeeze);
                if (u1 > nchw_ch)
                    means(xb, hw, (int)(std::max<int64_t>(u0, nchw_ch) - nchw_ch) * b,
                          (int)(u1 - nchw_ch) * b, 1, squeeze + nchw_ch);
            });
            se_conv(isa, *in.se_reduce, squeeze, squeeze + w.cin);
            se_conv(isa, *in.se_expand, squeeze + w.cin, squeeze + w.cin + in.se_reduce->cout);
        }
        if (!g.bf) {
            scale(w, gain, scaled);
        } else {  // the gated values as bf16 pairs
            uint32_t* pv = reinterpret_cast<uint32_t*>(scratch<13>(pairs->vals.size() + 1));
            bf16_gated(pairs->fvals.data(), pairs->fch.data(), (int)pairs->fvals.size(), gain,
                       pv);
            bf.vals = pv;
        }
        images(wi, i, 1);
    }
}

}  // namespace

void sparse1x1(const SparseConv& w, const SparseInput& in, const SparseOutput& out, int n,
               int64_t hw, int isa, int threads, const int32_t* offs,
               const SparsePairs* pairs) {
    if (n <= 0 || hw <= 0 || w.cout <= 0) return;
    if (out.layout == SparseOutput::CHANNELS_LAST)
        return run(w, in, nullptr, &out.parts, n, hw, isa, threads, offs, pairs);
    if (out.layout == SparseOutput::BLOCKED) {  // channels-last parts: the channel blocks
        const int b = vector_width(isa), parts = w.cout / b;
        std::vector<int> channels(parts, b), sigmoid(parts, 0);
        std::vector<float*> dst(parts);
        for (int k = 0; k < parts; ++k) dst[k] = out.y + (int64_t)k * hw * b;
        ChannelsLast cl;
        cl.parts = parts, cl.channels = channels.data(), cl.sigmoid = sigmoid.data();
        cl.out = dst.data(), cl.img_stride = (int64_t)w.cout * hw;
        return run(w, in, nullptr, &cl, n, hw, isa, threads, offs, pairs);
    }
    NchwOut o{out.y, hw};
    if (out.interleave) {  // the interleaved tensor's planes to the even channels; ours between
        const float* a = out.interleave;
        float* y = out.y;
        parallel_ranges((int64_t)n * w.cout, threads, [&](int64_t p0, int64_t p1) {
            for (int64_t p = p0; p < p1; ++p)
                std::memcpy(y + 2 * p * hw, a + p * hw, sizeof(float) * hw);
        });
        o = NchwOut{out.y + hw, 2 * hw};
    }
    run(w, in, &o, nullptr, n, hw, isa, threads, offs, pairs);
}

}  // namespace picosparse
