// OpenVINO host for picosparse's kernels (../kernels): thin node classes - the sparse 1x1
// convolution, and the dense NCHW ops that keep its neighbours out of OpenVINO's blocked layouts
// (Conv2d, Upsample, ConcatShuffle). Each maps its attributes to the kernel's descriptors;
// which attributes combine is one table per op (kSparseRules, kConvRules), the layout rules
// that depend on the ISA the kernel's own (sparse1x1_error, conv_layout_error).
//
// Op "SparseConv1x1" (opset "picosparse"):
//   inputs  0: x       f32 [N, Cin, H, W]
//           1: weights i32 [L]: the conv's row-CSR segment, then (se_channels > 0) the
//                      squeeze-excite block's reduce (Cin -> se_channels) and expand
//                      (se_channels -> Cin) segments. A segment of a conv with C output rows:
//                      rowptr [C + 1], cols [nnz + 1], vals [nnz + 1] (f32 bits), bias [C]
//                      (f32 bits), nnz = rowptr[C]; cols / vals end in one padding entry.
//                      One input, not four per conv: the CPU plugin wraps every input in a
//                      fresh tensor on every call (~0.3 us each, ~130 ops per model).
//           2: gate    f32 [N, Cin, 1, 1], optional: x's channels are multiplied by it first
//                      (a squeeze-excite gate, folded into the weights per image)
//        last: shuffle_with f32 [N, Cout, H, W], if shuffle = 1: the output is then
//                      [N, 2 Cout, H, W], shuffle_with's channel c at 2c and the conv's at 2c + 1
//                      (ESNet's concat + 2-group channel shuffle, written in place)
//   attrs   cout: output channels; se_channels: 0, or the squeeze-excite block's width: the
//           block makes the gate from the mean of x over H x W itself (no ReduceMean / gate
//           nodes left in the graph);
//           activation: none | relu | hswish | hsigmoid | leaky; alpha, beta (hsigmoid / leaky);
//           se_reduce_activation / _alpha / _beta, se_expand_activation / _alpha / _beta: the
//           squeeze-excite convs' activations;
//           out_parts, out_sigmoid: empty (one NCHW output), or channels-last outputs: output k
//           is [N, H*W, out_parts[k]] of the next out_parts[k] channels, sigmoid if
//           out_sigmoid[k] (a detection head's split + sigmoid + transpose; no gate, no SE);
//           in_blocked / out_blocked: blocked layouts (kernels/api.h); in_nchw: with in_blocked,
//           x's first in_nchw channels are NCHW (SparseInput::nchw_prefix); shuffle: 0 / 1;
//           precision: f32, or bf16: the BF16 kernel (api.h's SparsePairs) on CPUs with
//           AVX512-BF16, f32 elsewhere;
//           threads: 0 = the calling TBB arena's concurrency, n = exactly n
//           (load_model sets it: inside the CPU plugin, evaluate() runs in the default arena,
//           whose concurrency is the core count, not INFERENCE_NUM_THREADS)
//   output  0: y       f32 [N, Cout, H, W]
// The CPU plugin runs it through evaluate() on plain NCHW buffers.
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/op/constant.hpp>
#include <openvino/op/op.hpp>

#include "../kernels/api.h"

namespace picosparse {

static int act_code(const std::string& s) { return picosparse::act_code(s.c_str()); }

// One rule an op's attributes (and its input count) must satisfy, with what to say if not.
template <class Attrs>
struct Rule {
    bool (*holds)(const Attrs& a, size_t inputs);
    const char* why;
};

template <class Attrs, size_t N>
void check_rules(const ov::Node* node, const Rule<Attrs> (&rules)[N], const Attrs& a,
                 size_t inputs) {
    for (const auto& r : rules) NODE_VALIDATION_CHECK(node, r.holds(a, inputs), r.why);
}

struct SeAct {  // a squeeze-excite conv's activation
    std::string activation = "none";
    float alpha = 0.f, beta = 0.f;
};

struct SparseAttrs {  // everything SparseConv1x1's visit_attributes names
    int64_t cout = 0, se_channels = 0, shuffle = 0;
    std::string activation = "none";
    float alpha = 0.f, beta = 0.f;
    int64_t threads = 0;
    SeAct se[2];  // reduce, expand
    std::vector<int64_t> out_parts, out_sigmoid;
    int64_t in_blocked = 0, out_blocked = 0;  // blocked layouts (kernels/api.h)
    int64_t in_nchw = 0;
    std::string precision = "f32";  // f32 | bf16 (the BF16 kernel where the CPU has it)
};

// SparseConv1x1's attribute rules (inputs: without shuffle_with)
const Rule<SparseAttrs> kSparseRules[] = {
    {[](const SparseAttrs& a, size_t) { return a.shuffle == 0 || a.shuffle == 1; },
     "shuffle must be 0 or 1"},
    {[](const SparseAttrs& a, size_t) { return a.precision == "f32" || a.precision == "bf16"; },
     "precision must be f32 or bf16"},
    {[](const SparseAttrs&, size_t n) { return n == 2 || n == 3; },
     "SparseConv1x1 takes x, weights, an optional gate and (shuffle = 1) shuffle_with"},
    {[](const SparseAttrs& a, size_t) {
         return act_code(a.activation) >= 0 && act_code(a.se[0].activation) >= 0 &&
                act_code(a.se[1].activation) >= 0;
     },
     "unknown activation (none, relu, hswish, hsigmoid, leaky)"},
    {[](const SparseAttrs& a, size_t) { return a.cout >= 1 && a.se_channels >= 0; },
     "cout must be >= 1 and se_channels >= 0"},
    {[](const SparseAttrs& a, size_t n) { return n != 3 || a.se_channels == 0; },
     "a gate input and se_channels exclude each other"},
    {[](const SparseAttrs& a, size_t) {
         return !a.shuffle || (a.out_parts.empty() && !a.out_blocked);
     },
     "shuffle needs one NCHW output"},
    {[](const SparseAttrs& a, size_t n) {
         return a.out_parts.empty() || (n == 2 && a.se_channels == 0 &&
                                        a.out_sigmoid.size() == a.out_parts.size() &&
                                        !a.out_blocked);
     },
     "out_parts needs no gate / SE block, one out_sigmoid flag per part and no blocked output"},
    {[](const SparseAttrs& a, size_t) {
         int64_t total = 0;
         for (auto c : a.out_parts) total += c;
         return a.out_parts.empty() || total == a.cout;
     },
     "out_parts must sum to cout"},
};

// One conv's segment of a SparseConv1x1 weights input at p[pos..] (see the op's comment) into
// w's pointers; advances pos. False if it does not fit in len entries.
static bool read_segment(const int32_t* p, size_t len, size_t& pos, int cout, SparseConv& w) {
    if (cout < 0 || pos + (size_t)cout + 1 > len) return false;
    w.cout = cout;
    w.rowptr = p + pos;
    const int32_t nnz = w.rowptr[cout];
    if (w.rowptr[0] != 0 || nnz < 0) return false;
    pos += (size_t)cout + 1;
    if (pos + 2 * ((size_t)nnz + 1) + (size_t)cout > len) return false;
    w.cols = p + pos;
    pos += (size_t)nnz + 1;
    w.vals = reinterpret_cast<const float*>(p + pos);
    pos += (size_t)nnz + 1;
    w.bias = reinterpret_cast<const float*>(p + pos);
    pos += (size_t)cout;
    return true;
}

class SparseConv1x1 : public ov::op::Op {
public:
    OPENVINO_OP("SparseConv1x1", "picosparse");

    SparseConv1x1() = default;  // built by NodeFactory / the IR reader: attributes, then inputs

    void validate_and_infer_types() override {
        const size_t n_in = get_input_size() - (size_t)(at.shuffle == 1);  // w/o shuffle_with
        check_rules(this, kSparseRules, at, n_in);
        NODE_VALIDATION_CHECK(this, get_input_element_type(0) == ov::element::f32,
                              "SparseConv1x1 input must be f32");
        NODE_VALIDATION_CHECK(this, get_input_element_type(1) == ov::element::i32 &&
                                  get_input_partial_shape(1).rank().compatible(1),
                              "SparseConv1x1 weights must be a 1-D i32 tensor");
        const auto& xs = get_input_partial_shape(0);
        if (xs.rank().is_static() && xs.rank().get_length() == 4 && xs[1].is_static())
            if (auto c = ov::as_type_ptr<ov::op::v0::Constant>(
                    input_value(1).get_node_shared_ptr()))  // a bad IR fails at read time
                NODE_VALIDATION_CHECK(this, weights_fit(c->get_data_ptr<int32_t>(),
                                                        ov::shape_size(c->get_shape()),
                                                        (int)xs[1].get_length()),
                                      "the weights input does not match cout / se_channels / "
                                      "Cin");
        if (n_in == 3) {
            const auto& gs = get_input_partial_shape(2);
            NODE_VALIDATION_CHECK(this, get_input_element_type(2) == ov::element::f32,
                                  "SparseConv1x1 gate must be f32");
            if (gs.is_static() && xs.is_static()) {
                const ov::Shape g = gs.to_shape(), x = xs.to_shape();
                NODE_VALIDATION_CHECK(this, g.size() == 4 && g[0] == x[0] && g[1] == x[1] &&
                                      g[2] == 1 && g[3] == 1, "gate must be [N, Cin, 1, 1]");
            }
        }
        ov::PartialShape out = ov::PartialShape::dynamic(4);
        if (xs.rank().is_static()) {
            NODE_VALIDATION_CHECK(this, xs.rank().get_length() == 4, "input must be NCHW");
            out = xs;
            out[1] = at.cout;
        }
        if (at.shuffle) {
            NODE_VALIDATION_CHECK(this, get_input_element_type(n_in) == ov::element::f32 &&
                                      get_input_partial_shape(n_in).compatible(out),
                                  "shuffle_with must be f32 [N, Cout, H, W]");
            if (out.rank().is_static()) out[1] = 2 * at.cout;
        }
        if (at.out_parts.empty()) {
            set_output_type(0, ov::element::f32, out);
            return;
        }
        set_output_size(at.out_parts.size());
        for (size_t k = 0; k < at.out_parts.size(); ++k) {
            ov::PartialShape pk{out[0], ov::Dimension::dynamic(), at.out_parts[k]};
            if (out.rank().is_static() && out[2].is_static() && out[3].is_static())
                pk[1] = out[2].get_length() * out[3].get_length();
            set_output_type(k, ov::element::f32, pk);
        }
    }

    std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& args) const override {
        auto op = std::make_shared<SparseConv1x1>();
        op->at = at;  // attributes first: validation reads them
        op->set_arguments(args);
        op->constructor_validate_and_infer_types();
        return op;
    }

    bool visit_attributes(ov::AttributeVisitor& v) override {
        v.on_attribute("cout", at.cout);
        v.on_attribute("se_channels", at.se_channels);
        v.on_attribute("shuffle", at.shuffle);
        v.on_attribute("activation", at.activation);
        v.on_attribute("alpha", at.alpha);
        v.on_attribute("beta", at.beta);
        v.on_attribute("threads", at.threads);
        v.on_attribute("se_reduce_activation", at.se[0].activation);
        v.on_attribute("se_reduce_alpha", at.se[0].alpha);
        v.on_attribute("se_reduce_beta", at.se[0].beta);
        v.on_attribute("se_expand_activation", at.se[1].activation);
        v.on_attribute("se_expand_alpha", at.se[1].alpha);
        v.on_attribute("se_expand_beta", at.se[1].beta);
        v.on_attribute("out_parts", at.out_parts);
        v.on_attribute("out_sigmoid", at.out_sigmoid);
        v.on_attribute("in_blocked", at.in_blocked);
        v.on_attribute("in_nchw", at.in_nchw);
        v.on_attribute("out_blocked", at.out_blocked);
        v.on_attribute("precision", at.precision);
        return true;
    }

    bool has_evaluate() const override { return true; }

    bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
        const ov::Shape& xs = inputs[0].get_shape();
        SparseConv w, se[2];  // the conv; the squeeze-excite block's reduce, expand
        const int cin = (int)xs[1];
        if (!read_weights(inputs[1].data<const int32_t>(), inputs[1].get_size(), cin, w, se))
            OPENVINO_THROW("picosparse: SparseConv1x1 '", get_friendly_name(),
                           "': the weights input does not match cout / se_channels / Cin");
        w.cin = cin;
        w.act = Activation{act_code(at.activation), at.alpha, at.beta};
        SparseInput in;  // the reader
        in.x = inputs[0].data<const float>();
        in.blocked = (int)at.in_blocked, in.nchw_prefix = (int)at.in_nchw;
        if (inputs.size() - (size_t)at.shuffle == 3) in.gate = inputs[2].data<const float>();
        if (at.se_channels > 0) {
            se[0].cin = cin, se[1].cin = (int)at.se_channels;
            for (int j = 0; j < 2; ++j)
                se[j].act = Activation{act_code(at.se[j].activation), at.se[j].alpha,
                                       at.se[j].beta};
            in.se_reduce = &se[0], in.se_expand = &se[1];
        }
        const int64_t hw = (int64_t)(xs[2] * xs[3]);
        SparseOutput out;  // the writer
        std::vector<int> channels(at.out_parts.size()), sigmoid(at.out_parts.size());
        std::vector<float*> parts(at.out_parts.size());
        if (!at.out_parts.empty()) {
            for (size_t k = 0; k < parts.size(); ++k) {
                channels[k] = (int)at.out_parts[k];
                sigmoid[k] = (int)at.out_sigmoid[k];
                outputs[k].set_shape(ov::Shape{xs[0], (size_t)hw, (size_t)channels[k]});
                parts[k] = outputs[k].data<float>();
            }
            out.layout = SparseOutput::CHANNELS_LAST;
            out.parts.parts = (int)parts.size(), out.parts.channels = channels.data();
            out.parts.sigmoid = sigmoid.data(), out.parts.out = parts.data();
        } else {
            ov::Shape ys = xs;
            ys[1] = (size_t)w.cout * (at.shuffle ? 2 : 1);
            outputs[0].set_shape(ys);
            out.layout = at.out_blocked ? SparseOutput::BLOCKED : SparseOutput::NCHW;
            out.y = outputs[0].data<float>();
            if (at.shuffle) out.interleave = inputs.back().data<const float>();
        }
        const char* err = nullptr;
        const int isa = select_isa(&err);
        if (isa < 0) OPENVINO_THROW("picosparse: ", err);
        if (const char* why = sparse1x1_error(w, in, out, isa))
            OPENVINO_THROW("picosparse: ", why);
        const bool bf16 = at.precision == "bf16" && bf16_runs(isa);
        const int tw = sp_tile_width(isa, w.cin, hw, bf16);
        const auto offs = bf16 ? nullptr : offsets(w, tw);
        const auto pairs = bf16 ? pair_form(w, tw) : nullptr;
        sparse1x1(w, in, out, (int)xs[0], hw, isa, (int)at.threads, offs ? offs->data() : nullptr,
                  pairs.get());
        return true;
    }

private:
    // The conv's and (se_channels > 0) the SE block's segments of the weights input, filling
    // exactly len entries
    bool read_weights(const int32_t* p, size_t len, int cin, SparseConv& w,
                      SparseConv* se) const {
        size_t pos = 0;
        bool ok = read_segment(p, len, pos, (int)at.cout, w);
        if (ok && at.se_channels > 0)
            ok = read_segment(p, len, pos, (int)at.se_channels, se[0]) &&
                 read_segment(p, len, pos, cin, se[1]);
        return ok && pos == len;
    }

    // read_weights, and every row's columns inside its input (checked once, at validation)
    bool weights_fit(const int32_t* p, size_t len, int cin) const {
        SparseConv w, se[2];
        if (!read_weights(p, len, cin, w, se)) return false;
        const auto rows_ok = [](const SparseConv& s, int in) {
            for (int r = 0; r < s.cout; ++r)
                if (s.rowptr[r] > s.rowptr[r + 1]) return false;
            for (int k = 0; k < s.rowptr[s.cout]; ++k)
                if (s.cols[k] < 0 || s.cols[k] >= in) return false;
            return true;
        };
        return rows_ok(w, cin) && (at.se_channels == 0 || (rows_ok(se[0], cin) &&
                                                          rows_ok(se[1], (int)at.se_channels)));
    }

    // The nonzeros' tile offsets for tile width tw, computed on the first call and kept (the
    // weights are constants; tw changes only if the input shape does). Shared so a concurrent
    // call that recomputes them never frees what another is reading.
    std::shared_ptr<const std::vector<int32_t>> offsets(const SparseConv& w, int tw) const {
        std::lock_guard<std::mutex> lock(m_cache_mutex);
        if (!m_offs || m_offs_tw != tw) {
            auto offs = std::make_shared<std::vector<int32_t>>((size_t)w.rowptr[w.cout] + 1);
            sp_offsets(w, tw, offs->data());
            m_offs = std::move(offs);
            m_offs_tw = tw;
        }
        return m_offs;
    }

    // The BF16 pair form for tile width tw, kept like the offsets
    std::shared_ptr<const SparsePairs> pair_form(const SparseConv& w, int tw) const {
        std::lock_guard<std::mutex> lock(m_cache_mutex);
        if (!m_pairs || m_pairs->tw != tw) {
            auto p = std::make_shared<SparsePairs>();
            sp_pairs(w, tw, p.get());
            m_pairs = std::move(p);
        }
        return m_pairs;
    }

    SparseAttrs at;  // one copy in clone_with_new_inputs: none can be forgotten there
    mutable std::mutex m_cache_mutex;
    mutable std::shared_ptr<const std::vector<int32_t>> m_offs;
    mutable int m_offs_tw = 0;
    mutable std::shared_ptr<const SparsePairs> m_pairs;
};

struct ConvAttrs {  // everything Conv2d's visit_attributes names
    int64_t cout = 0, kernel = 0, groups = 1, stride = 1;
    std::vector<int64_t> pads{0, 0, 0, 0};
    std::string activation = "none";
    float alpha = 0.f, beta = 0.f;
    std::vector<int64_t> pool;
    int64_t threads = 0;
    int64_t in_blocked = 0, out_blocked = 0;  // blocked layouts (kernels/api.h)
    std::string precision = "f32";  // f32 | bf16 (ConvParams::bf16 where the CPU has it)
};

// Conv2d's attribute rules
const Rule<ConvAttrs> kConvRules[] = {
    {[](const ConvAttrs&, size_t n) { return n == 2; }, "Conv2d takes 2 inputs (x, weights)"},
    {[](const ConvAttrs& a, size_t) {
         return a.pool.empty() || (a.pool.size() == 6 && a.pool[0] >= 1 && a.pool[1] >= 1);
     },
     "pool must be empty or [k, stride, pad t, l, b, r]"},
    {[](const ConvAttrs& a, size_t) { return act_code(a.activation) >= 0; },
     "unknown activation (none, relu, hswish, hsigmoid, leaky)"},
    {[](const ConvAttrs& a, size_t) {
         return a.pads.size() == 4 && a.stride >= 1 && a.groups >= 1 && a.cout >= 1 &&
                a.kernel >= 1;
     },
     "bad cout/kernel/groups/stride/pads"},
    {[](const ConvAttrs& a, size_t) { return a.precision == "f32" || a.precision == "bf16"; },
     "precision must be f32 or bf16"},
};

// Op "Conv2d" (opset "picosparse"): inputs x f32 [N, Cin, H, W], weights f32 [Cout * Cin/groups
// * K * K + Cout]: the conv's [Cout, Cin/groups, K, K] weights (BN folded), then its bias (one
// input, not two: see SparseConv1x1); attrs cout, kernel (K), groups, stride, pads (top, left,
// bottom, right), activation/alpha/beta, pool (empty, or a max pool fused after the activation:
// kernel, stride, pads top/left/bottom/right), threads, in_blocked / out_blocked, precision
// (f32, or bf16: conv_bf16.cpp's kernels where they fit and the CPU has them). The depthwise
// convs (groups == Cin == Cout) and the small dense stem conv: plain NCHW like SparseConv1x1, so
// no layout reorders sit between them.
class Conv2d : public ov::op::Op {
public:
    OPENVINO_OP("Conv2d", "picosparse");

    Conv2d() = default;  // built by NodeFactory / the IR reader: attributes, then inputs

    ConvParams params(const ov::Shape& xs) const {
        ConvParams p;
        p.cin = (int)xs[1], p.cout = (int)at.cout, p.groups = (int)at.groups;
        p.h = (int)xs[2], p.w = (int)xs[3], p.k = (int)at.kernel;
        p.stride = (int)at.stride;
        p.pad_t = (int)at.pads[0], p.pad_l = (int)at.pads[1];
        p.pad_b = (int)at.pads[2], p.pad_r = (int)at.pads[3];
        p.act = Activation{act_code(at.activation), at.alpha, at.beta};
        if (at.pool.size() == 6) {
            p.pool_k = (int)at.pool[0], p.pool_s = (int)at.pool[1];
            p.pool_pad_t = (int)at.pool[2], p.pool_pad_l = (int)at.pool[3];
            p.pool_pad_b = (int)at.pool[4], p.pool_pad_r = (int)at.pool[5];
        }
        return p;
    }

    void validate_and_infer_types() override {
        check_rules(this, kConvRules, at, get_input_size());
        NODE_VALIDATION_CHECK(this, get_input_element_type(1) == ov::element::f32 &&
                                  get_input_partial_shape(1).rank().compatible(1),
                              "Conv2d weights must be a 1-D f32 tensor");
        const auto& xs = get_input_partial_shape(0);
        const auto& ws = get_input_partial_shape(1);
        if (xs.is_static() && ws.is_static()) {
            const ov::Shape x = xs.to_shape();
            NODE_VALIDATION_CHECK(this, x[1] % at.groups == 0 && at.cout % at.groups == 0,
                                  "channels do not match groups");
            NODE_VALIDATION_CHECK(this, ws.to_shape()[0] == (size_t)(at.cout * ((int64_t)x[1] /
                                                                     at.groups) * at.kernel *
                                                                     at.kernel + at.cout),
                                  "weights must hold cout * Cin/groups * kernel^2 weights and "
                                  "cout biases");
            const auto p = params(x);
            set_output_type(0, ov::element::f32,
                            ov::PartialShape{xs[0], at.cout, p.final_h(), p.final_w()});
        } else {
            set_output_type(0, ov::element::f32, ov::PartialShape::dynamic(4));
        }
    }

    std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& args) const override {
        auto op = std::make_shared<Conv2d>();
        op->at = at;  // attributes first: validation reads them
        op->set_arguments(args);
        op->constructor_validate_and_infer_types();
        return op;
    }

    bool visit_attributes(ov::AttributeVisitor& v) override {
        v.on_attribute("cout", at.cout);
        v.on_attribute("kernel", at.kernel);
        v.on_attribute("groups", at.groups);
        v.on_attribute("stride", at.stride);
        v.on_attribute("pads", at.pads);
        v.on_attribute("activation", at.activation);
        v.on_attribute("alpha", at.alpha);
        v.on_attribute("beta", at.beta);
        v.on_attribute("pool", at.pool);
        v.on_attribute("threads", at.threads);
        v.on_attribute("in_blocked", at.in_blocked);
        v.on_attribute("out_blocked", at.out_blocked);
        v.on_attribute("precision", at.precision);
        return true;
    }

    bool has_evaluate() const override { return true; }

    bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
        const ov::Shape xs = inputs[0].get_shape();
        ConvParams p = params(xs);
        p.bf16 = at.precision == "bf16";
        p.wt = inputs[1].data<const float>();
        p.bias = p.wt + (int64_t)p.cout * (p.cin / p.groups) * p.k * p.k;
        outputs[0].set_shape(ov::Shape{xs[0], (size_t)p.cout, (size_t)p.final_h(),
                                       (size_t)p.final_w()});
        const char* err = nullptr;
        const int isa = select_isa(&err);
        if (isa < 0) OPENVINO_THROW("picosparse: ", err);
        p.in_blocked = (int)at.in_blocked, p.out_blocked = (int)at.out_blocked;
        if (const char* why = conv_layout_error(p, isa)) OPENVINO_THROW("picosparse: ", why);
        conv2d(p, inputs[0].data<const float>(), outputs[0].data<float>(), (int)xs[0], isa,
               (int)at.threads);
        return true;
    }

private:
    ConvAttrs at;  // one copy in clone_with_new_inputs: none can be forgotten there
};

// Op "Upsample" (opset "picosparse"): x f32 [N, C, H, W] -> [N, C, H * factor_h, W * factor_w],
// nearest neighbour (OpenVINO Interpolate nearest/asymmetric/simple at integer scales).
class Upsample : public ov::op::Op {
public:
    OPENVINO_OP("Upsample", "picosparse");

    Upsample() = default;
    Upsample(const ov::OutputVector& args, int64_t fh, int64_t fw)
        : Op(args), m_fh(fh), m_fw(fw) {
        constructor_validate_and_infer_types();
    }

    void validate_and_infer_types() override {
        NODE_VALIDATION_CHECK(this, get_input_size() == 1 && m_fh >= 1 && m_fw >= 1,
                              "Upsample takes 1 input and factors >= 1");
        auto s = get_input_partial_shape(0);
        if (s.rank().is_static()) {
            NODE_VALIDATION_CHECK(this, s.rank().get_length() == 4, "input must be NCHW");
            if (s[2].is_static()) s[2] = s[2].get_length() * m_fh;
            if (s[3].is_static()) s[3] = s[3].get_length() * m_fw;
        }
        set_output_type(0, ov::element::f32, s);
    }

    std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& args) const override {
        auto op = std::make_shared<Upsample>(args, m_fh, m_fw);
        op->m_threads = m_threads;
        return op;
    }

    bool visit_attributes(ov::AttributeVisitor& v) override {
        v.on_attribute("factor_h", m_fh);
        v.on_attribute("factor_w", m_fw);
        v.on_attribute("threads", m_threads);
        return true;
    }

    bool has_evaluate() const override { return true; }

    bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
        const ov::Shape xs = inputs[0].get_shape();
        outputs[0].set_shape(ov::Shape{xs[0], xs[1], xs[2] * m_fh, xs[3] * m_fw});
        upsample_nearest(inputs[0].data<const float>(), outputs[0].data<float>(),
                         (int64_t)(xs[0] * xs[1]), (int)xs[2], (int)xs[3], (int)m_fh, (int)m_fw,
                         (int)m_threads);
        return true;
    }

private:
    int64_t m_fh = 2, m_fw = 2, m_threads = 0;
};

// Op "ConcatShuffle" (opset "picosparse"): a, b f32 [N, C, H, W] -> [N, 2C, H, W], the
// 2-group channel shuffle of their concat (ESNet's block output): y[:, 2i] = a[:, i],
// y[:, 2i + 1] = b[:, i].
class ConcatShuffle : public ov::op::Op {
public:
    OPENVINO_OP("ConcatShuffle", "picosparse");

    ConcatShuffle() = default;
    explicit ConcatShuffle(const ov::OutputVector& args) : Op(args) {
        constructor_validate_and_infer_types();
    }

    void validate_and_infer_types() override {
        NODE_VALIDATION_CHECK(this, get_input_size() == 2, "ConcatShuffle takes 2 inputs");
        auto s = get_input_partial_shape(0);
        NODE_VALIDATION_CHECK(this, s.compatible(get_input_partial_shape(1)),
                              "ConcatShuffle inputs must have one shape");
        if (s.rank().is_static()) {
            NODE_VALIDATION_CHECK(this, s.rank().get_length() == 4, "inputs must be NCHW");
            if (s[1].is_static()) s[1] = s[1].get_length() * 2;
        }
        set_output_type(0, ov::element::f32, s);
    }

    std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& args) const override {
        auto op = std::make_shared<ConcatShuffle>(args);
        op->m_threads = m_threads;
        return op;
    }

    bool visit_attributes(ov::AttributeVisitor& v) override {
        v.on_attribute("threads", m_threads);
        return true;
    }

    bool has_evaluate() const override { return true; }

    bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
        const ov::Shape xs = inputs[0].get_shape();
        outputs[0].set_shape(ov::Shape{xs[0], xs[1] * 2, xs[2], xs[3]});
        concat_shuffle(inputs[0].data<const float>(), inputs[1].data<const float>(),
                       outputs[0].data<float>(), (int)xs[0], (int)xs[1], (int64_t)(xs[2] * xs[3]),
                       (int)m_threads);
        return true;
    }

private:
    int64_t m_threads = 0;
};

}  // namespace picosparse

OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>(
    {std::make_shared<ov::OpExtension<picosparse::SparseConv1x1>>(),
     std::make_shared<ov::OpExtension<picosparse::Conv2d>>(),
     std::make_shared<ov::OpExtension<picosparse::Upsample>>(),
     std::make_shared<ov::OpExtension<picosparse::ConcatShuffle>>()}));
