// OpenVINO host for picosparse's ops - the sparse 1x1 convolution, and the dense NCHW ops that
// keep its neighbours out of OpenVINO's blocked layouts (Conv2d, Upsample) - plus a tiny C API
// (for ctypes tests) in the same shared library.
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
//           in_blocked / out_blocked: kBlocked layouts (spconv.h); in_nchw: with in_blocked,
//           x's first in_nchw channels are NCHW (SparseWeights::in_nchw); shuffle: 0 / 1 (above);
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

#include "spconv.h"

namespace picosparse {

static int act_code(const std::string& s) {
    if (s == "none") return ACT_NONE;
    if (s == "relu") return ACT_RELU;
    if (s == "hswish") return ACT_HSWISH;
    if (s == "hsigmoid") return ACT_HSIGMOID;
    if (s == "leaky") return ACT_LEAKY;
    return -1;
}

// One conv's segment of a SparseConv1x1 weights input at p[pos..] (see the op's comment) into
// w's pointers; advances pos. False if it does not fit in len entries.
static bool read_segment(const int32_t* p, size_t len, size_t& pos, int cout, SparseWeights& w) {
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
        NODE_VALIDATION_CHECK(this, m_shuffle == 0 || m_shuffle == 1, "shuffle must be 0 or 1");
        const size_t n_in = get_input_size() - (size_t)m_shuffle;  // without shuffle_with
        NODE_VALIDATION_CHECK(this, n_in == 2 || n_in == 3,
                              "SparseConv1x1 takes x, weights, an optional gate and (shuffle = 1) "
                              "shuffle_with");
        for (const auto* a : {&m_activation, &m_se[0].activation, &m_se[1].activation})
            NODE_VALIDATION_CHECK(this, act_code(*a) >= 0, "unknown activation '", *a, "'");
        NODE_VALIDATION_CHECK(this, m_cout >= 1 && m_se_channels >= 0,
                              "cout must be >= 1 and se_channels >= 0");
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
            NODE_VALIDATION_CHECK(this, m_se_channels == 0,
                                  "a gate input and se_channels exclude each other");
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
            out[1] = m_cout;
        }
        if (m_shuffle) {
            NODE_VALIDATION_CHECK(this, m_out_parts.empty() && !m_out_blocked,
                                  "shuffle needs one NCHW output");
            NODE_VALIDATION_CHECK(this, get_input_element_type(n_in) == ov::element::f32 &&
                                      get_input_partial_shape(n_in).compatible(out),
                                  "shuffle_with must be f32 [N, Cout, H, W]");
            if (out.rank().is_static()) out[1] = 2 * m_cout;
        }
        if (m_out_parts.empty()) {
            set_output_type(0, ov::element::f32, out);
            return;
        }
        NODE_VALIDATION_CHECK(this, n_in == 2 && m_se_channels == 0 &&
                                  m_out_sigmoid.size() == m_out_parts.size() && !m_out_blocked,
                              "out_parts needs no gate / SE block, one out_sigmoid flag per "
                              "part and no blocked output");
        int64_t total = 0;
        for (auto c : m_out_parts) total += c;
        NODE_VALIDATION_CHECK(this, total == m_cout, "out_parts must sum to cout");
        set_output_size(m_out_parts.size());
        for (size_t k = 0; k < m_out_parts.size(); ++k) {
            ov::PartialShape pk{out[0], ov::Dimension::dynamic(), m_out_parts[k]};
            if (out.rank().is_static() && out[2].is_static() && out[3].is_static())
                pk[1] = out[2].get_length() * out[3].get_length();
            set_output_type(k, ov::element::f32, pk);
        }
    }

    std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& args) const override {
        auto op = std::make_shared<SparseConv1x1>();  // attributes first: validation reads them
        op->m_cout = m_cout;
        op->m_activation = m_activation, op->m_alpha = m_alpha, op->m_beta = m_beta;
        op->m_se_channels = m_se_channels;
        op->m_shuffle = m_shuffle;
        op->m_threads = m_threads;
        op->m_se[0] = m_se[0];
        op->m_se[1] = m_se[1];
        op->m_out_parts = m_out_parts;
        op->m_out_sigmoid = m_out_sigmoid;
        op->m_in_blocked = m_in_blocked;
        op->m_in_nchw = m_in_nchw;
        op->m_out_blocked = m_out_blocked;
        op->set_arguments(args);
        op->constructor_validate_and_infer_types();
        return op;
    }

    bool visit_attributes(ov::AttributeVisitor& v) override {
        v.on_attribute("cout", m_cout);
        v.on_attribute("se_channels", m_se_channels);
        v.on_attribute("shuffle", m_shuffle);
        v.on_attribute("activation", m_activation);
        v.on_attribute("alpha", m_alpha);
        v.on_attribute("beta", m_beta);
        v.on_attribute("threads", m_threads);
        v.on_attribute("se_reduce_activation", m_se[0].activation);
        v.on_attribute("se_reduce_alpha", m_se[0].alpha);
        v.on_attribute("se_reduce_beta", m_se[0].beta);
        v.on_attribute("se_expand_activation", m_se[1].activation);
        v.on_attribute("se_expand_alpha", m_se[1].alpha);
        v.on_attribute("se_expand_beta", m_se[1].beta);
        v.on_attribute("out_parts", m_out_parts);
        v.on_attribute("out_sigmoid", m_out_sigmoid);
        v.on_attribute("in_blocked", m_in_blocked);
        v.on_attribute("in_nchw", m_in_nchw);
        v.on_attribute("out_blocked", m_out_blocked);
        return true;
    }

    bool has_evaluate() const override { return true; }

    bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
        const auto& x = inputs[0];
        const ov::Shape& xs = x.get_shape();
        SparseWeights w, se[2];  // the conv; the squeeze-excite block's reduce, expand
        const int cin = (int)xs[1];
        if (!read_weights(inputs[1].data<const int32_t>(), inputs[1].get_size(), cin, w, se))
            OPENVINO_THROW("picosparse: SparseConv1x1 '", get_friendly_name(),
                           "': the weights input does not match cout / se_channels / Cin");
        w.cin = cin;
        w.act = act_code(m_activation);
        w.alpha = m_alpha;
        w.beta = m_beta;
        if (inputs.size() - (size_t)m_shuffle == 3) w.gate = inputs[2].data<const float>();
        if (m_shuffle) w.shuffle_with = inputs.back().data<const float>();
        if (m_se_channels > 0) {
            se[0].cin = cin, se[1].cin = (int)m_se_channels;
            for (int j = 0; j < 2; ++j) {
                se[j].act = act_code(m_se[j].activation);
                se[j].alpha = m_se[j].alpha;
                se[j].beta = m_se[j].beta;
            }
            w.se_reduce = &se[0], w.se_expand = &se[1];
        }
        w.in_blocked = (int)m_in_blocked, w.out_blocked = (int)m_out_blocked;
        w.in_nchw = (int)m_in_nchw;
        const char* err = nullptr;
        const int isa = select_isa(&err);
        if (isa < 0) OPENVINO_THROW("picosparse: ", err);
        if (const char* why = sp_layout_error(w, isa)) OPENVINO_THROW("picosparse: ", why);
        const int64_t hw = (int64_t)(xs[2] * xs[3]);
        const auto offs = offsets(w, sp_tile_width(isa, w.cin, hw));
        if (!m_out_parts.empty()) {
            const size_t parts = m_out_parts.size();
            std::vector<int> channels(parts), sigmoid(parts);
            std::vector<float*> out(parts);
            for (size_t k = 0; k < parts; ++k) {
                channels[k] = (int)m_out_parts[k];
                sigmoid[k] = (int)m_out_sigmoid[k];
                outputs[k].set_shape(ov::Shape{xs[0], (size_t)hw, (size_t)channels[k]});
                out[k] = outputs[k].data<float>();
            }
            NlcOut o;
            o.parts = (int)parts, o.channels = channels.data(), o.sigmoid = sigmoid.data();
            o.out = out.data();
            spconv1x1_nlc(w, x.data<const float>(), o, (int)xs[0], hw, isa, (int)m_threads,
                          offs->data());
            return true;
        }
        ov::Shape ys = xs;
        ys[1] = (size_t)w.cout * (m_shuffle ? 2 : 1);
        outputs[0].set_shape(ys);
        spconv1x1(w, x.data<const float>(), outputs[0].data<float>(), (int)xs[0], hw, isa,
                  (int)m_threads, offs->data());
        return true;
    }

private:
    // The conv's and (se_channels > 0) the SE block's segments of the weights input, filling
    // exactly len entries
    bool read_weights(const int32_t* p, size_t len, int cin, SparseWeights& w,
                      SparseWeights* se) const {
        size_t pos = 0;
        bool ok = read_segment(p, len, pos, (int)m_cout, w);
        if (ok && m_se_channels > 0)
            ok = read_segment(p, len, pos, (int)m_se_channels, se[0]) &&
                 read_segment(p, len, pos, cin, se[1]);
        return ok && pos == len;
    }

    // read_weights, and every row's columns inside its input (checked once, at validation)
    bool weights_fit(const int32_t* p, size_t len, int cin) const {
        SparseWeights w, se[2];
        if (!read_weights(p, len, cin, w, se)) return false;
        const auto rows_ok = [](const SparseWeights& s, int in) {
            for (int r = 0; r < s.cout; ++r)
                if (s.rowptr[r] > s.rowptr[r + 1]) return false;
            for (int k = 0; k < s.rowptr[s.cout]; ++k)
                if (s.cols[k] < 0 || s.cols[k] >= in) return false;
            return true;
        };
        return rows_ok(w, cin) && (m_se_channels == 0 || (rows_ok(se[0], cin) &&
                                                          rows_ok(se[1], (int)m_se_channels)));
    }

    // The nonzeros' tile offsets for tile width tw, computed on the first call and kept (the
    // weights are constants; tw changes only if the input shape does). Shared so a concurrent
    // call that recomputes them never frees what another is reading.
    std::shared_ptr<const std::vector<int32_t>> offsets(const SparseWeights& w, int tw) const {
        std::lock_guard<std::mutex> lock(m_cache_mutex);
        if (!m_offs || m_offs_tw != tw) {
            auto offs = std::make_shared<std::vector<int32_t>>((size_t)w.rowptr[w.cout] + 1);
            sp_offsets(w, tw, offs->data());
            m_offs = std::move(offs);
            m_offs_tw = tw;
        }
        return m_offs;
    }

    int64_t m_cout = 0, m_se_channels = 0, m_shuffle = 0;
    std::string m_activation = "none";
    float m_alpha = 0.f, m_beta = 0.f;
    int64_t m_threads = 0;
    struct SeAct {  // a squeeze-excite conv's activation
        std::string activation = "none";
        float alpha = 0.f, beta = 0.f;
    } m_se[2];      // reduce, expand
    std::vector<int64_t> m_out_parts, m_out_sigmoid;
    int64_t m_in_blocked = 0, m_out_blocked = 0;  // kBlocked layouts (spconv.h)
    int64_t m_in_nchw = 0;
    mutable std::mutex m_cache_mutex;
    mutable std::shared_ptr<const std::vector<int32_t>> m_offs;
    mutable int m_offs_tw = 0;
};

// Op "Conv2d" (opset "picosparse"): inputs x f32 [N, Cin, H, W], weights f32 [Cout * Cin/groups
// * K * K + Cout]: the conv's [Cout, Cin/groups, K, K] weights (BN folded), then its bias (one
// input, not two: see SparseConv1x1); attrs cout, kernel (K), groups, stride, pads (top, left,
// bottom, right), activation/alpha/beta, pool (empty, or a max pool fused after the activation:
// kernel, stride, pads top/left/bottom/right), threads, in_blocked / out_blocked. The depthwise
// convs (groups == Cin == Cout) and the small dense stem conv: plain NCHW like SparseConv1x1, so
// no layout reorders sit between them.
class Conv2d : public ov::op::Op {
public:
    OPENVINO_OP("Conv2d", "picosparse");

    Conv2d() = default;  // built by NodeFactory / the IR reader: attributes, then inputs

    ConvParams params(const ov::Shape& xs) const {
        ConvParams p;
        p.cin = (int)xs[1], p.cout = (int)m_cout, p.groups = (int)m_groups;
        p.h = (int)xs[2], p.w = (int)xs[3], p.k = (int)m_kernel;
        p.stride = (int)m_stride;
        p.pad_t = (int)m_pads[0], p.pad_l = (int)m_pads[1];
        p.pad_b = (int)m_pads[2], p.pad_r = (int)m_pads[3];
        p.act = act_code(m_activation), p.alpha = m_alpha, p.beta = m_beta;
        if (m_pool.size() == 6) {
            p.pool_k = (int)m_pool[0], p.pool_s = (int)m_pool[1];
            p.pool_pad_t = (int)m_pool[2], p.pool_pad_l = (int)m_pool[3];
            p.pool_pad_b = (int)m_pool[4], p.pool_pad_r = (int)m_pool[5];
        }
        return p;
    }

    void validate_and_infer_types() override {
        NODE_VALIDATION_CHECK(this, get_input_size() == 2, "Conv2d takes 2 inputs (x, weights)");
        NODE_VALIDATION_CHECK(this, m_pool.empty() || (m_pool.size() == 6 && m_pool[0] >= 1 &&
                                                        m_pool[1] >= 1),
                              "pool must be empty or [k, stride, pad t, l, b, r]");
        NODE_VALIDATION_CHECK(this, act_code(m_activation) >= 0, "unknown activation");
        NODE_VALIDATION_CHECK(this, m_pads.size() == 4 && m_stride >= 1 && m_groups >= 1 &&
                                  m_cout >= 1 && m_kernel >= 1,
                              "bad cout/kernel/groups/stride/pads");
        NODE_VALIDATION_CHECK(this, get_input_element_type(1) == ov::element::f32 &&
                                  get_input_partial_shape(1).rank().compatible(1),
                              "Conv2d weights must be a 1-D f32 tensor");
        const auto& xs = get_input_partial_shape(0);
        const auto& ws = get_input_partial_shape(1);
        if (xs.is_static() && ws.is_static()) {
            const ov::Shape x = xs.to_shape();
            NODE_VALIDATION_CHECK(this, x[1] % m_groups == 0 && m_cout % m_groups == 0,
                                  "channels do not match groups");
            NODE_VALIDATION_CHECK(this, ws.to_shape()[0] == (size_t)(m_cout * ((int64_t)x[1] /
                                                                     m_groups) * m_kernel *
                                                                     m_kernel + m_cout),
                                  "weights must hold cout * Cin/groups * kernel^2 weights and "
                                  "cout biases");
            const auto p = params(x);
            set_output_type(0, ov::element::f32,
                            ov::PartialShape{xs[0], m_cout, p.final_h(), p.final_w()});
        } else {
            set_output_type(0, ov::element::f32, ov::PartialShape::dynamic(4));
        }
    }

    std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& args) const override {
        auto op = std::make_shared<Conv2d>();  // attributes first: validation reads them
        op->m_cout = m_cout, op->m_kernel = m_kernel;
        op->m_groups = m_groups, op->m_stride = m_stride, op->m_pads = m_pads;
        op->m_activation = m_activation, op->m_alpha = m_alpha, op->m_beta = m_beta;
        op->m_pool = m_pool;
        op->m_threads = m_threads;
        op->m_in_blocked = m_in_blocked;
        op->m_out_blocked = m_out_blocked;
        op->set_arguments(args);
        op->constructor_validate_and_infer_types();
        return op;
    }

    bool visit_attributes(ov::AttributeVisitor& v) override {
        v.on_attribute("cout", m_cout);
        v.on_attribute("kernel", m_kernel);
        v.on_attribute("groups", m_groups);
        v.on_attribute("stride", m_stride);
        v.on_attribute("pads", m_pads);
        v.on_attribute("activation", m_activation);
        v.on_attribute("alpha", m_alpha);
        v.on_attribute("beta", m_beta);
        v.on_attribute("pool", m_pool);
        v.on_attribute("threads", m_threads);
        v.on_attribute("in_blocked", m_in_blocked);
        v.on_attribute("out_blocked", m_out_blocked);
        return true;
    }

    bool has_evaluate() const override { return true; }

    bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
        const ov::Shape xs = inputs[0].get_shape();
        ConvParams p = params(xs);
        p.wt = inputs[1].data<const float>();
        p.bias = p.wt + (int64_t)p.cout * (p.cin / p.groups) * p.k * p.k;
        outputs[0].set_shape(ov::Shape{xs[0], (size_t)p.cout, (size_t)p.final_h(),
                                       (size_t)p.final_w()});
        const char* err = nullptr;
        const int isa = select_isa(&err);
        if (isa < 0) OPENVINO_THROW("picosparse: ", err);
        p.in_blocked = (int)m_in_blocked, p.out_blocked = (int)m_out_blocked;
        if (const char* why = conv_layout_error(p, isa)) OPENVINO_THROW("picosparse: ", why);
        conv2d(p, inputs[0].data<const float>(), outputs[0].data<float>(), (int)xs[0], isa,
               (int)m_threads);
        return true;
    }

private:
    int64_t m_cout = 0, m_kernel = 0, m_groups = 1, m_stride = 1;
    std::vector<int64_t> m_pads{0, 0, 0, 0};
    std::string m_activation = "none";
    float m_alpha = 0.f, m_beta = 0.f;
    std::vector<int64_t> m_pool;
    int64_t m_threads = 0;
    int64_t m_in_blocked = 0, m_out_blocked = 0;  // kBlocked layouts (spconv.h)
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

// ------------------------------------------------------------------ C API (ctypes, tests, bench)
extern "C" {

__attribute__((visibility("default"))) int ps_cpu_supports(int isa) {
    return picosparse::cpu_supports(isa) ? 1 : 0;
}

// The ISA the next call would use (honours PICOSPARSE_ISA); -1 if the variable is invalid.
__attribute__((visibility("default"))) int ps_select_isa() {
    return picosparse::select_isa(nullptr);
}

// Returns the ISA used (>= 0), or -1 with a message in err.
__attribute__((visibility("default"))) int ps_spconv1x1(
    const int32_t* rowptr, const int32_t* cols, const float* vals, const float* bias, int cout,
    int cin, int act, float alpha, float beta, const float* gate, const float* x, float* y, int n,
    int64_t hw, int threads, int layout, char* err, int errlen) {
    const char* e = nullptr;
    const int isa = picosparse::select_isa(&e);
    if (isa < 0) {
        if (err && errlen > 0) std::strncpy(err, e, (size_t)errlen - 1), err[errlen - 1] = 0;
        return -1;
    }
    picosparse::SparseWeights w;
    w.cout = cout, w.cin = cin, w.rowptr = rowptr, w.cols = cols, w.vals = vals, w.bias = bias;
    w.act = act, w.alpha = alpha, w.beta = beta, w.gate = gate;
    w.in_blocked = layout & 1, w.out_blocked = (layout >> 1) & 1;
    if (const char* why = picosparse::sp_layout_error(w, isa)) {
        if (err && errlen > 0) std::snprintf(err, (size_t)errlen, "%s", why);
        return -1;
    }
    picosparse::spconv1x1(w, x, y, n, hw, isa, threads < 1 ? 1 : threads);
    return isa;
}

// Direct conv (weights [cout, cin/groups, k, k]); pads = {top, left, bottom, right}; pool =
// null or {k, stride, pad top, left, bottom, right} of a fused max pool. Returns the ISA used
// or -1 (see above).
__attribute__((visibility("default"))) int ps_conv2d(
    const float* wt, const float* bias, int cin, int cout, int groups, int h, int w, int k,
    int stride, const int* pads, int act, float alpha, float beta, const int* pool,
    const float* x, float* y, int n, int threads, int layout, char* err, int errlen) {
    const char* e = nullptr;
    const int isa = picosparse::select_isa(&e);
    if (isa < 0) {
        if (err && errlen > 0) std::strncpy(err, e, (size_t)errlen - 1), err[errlen - 1] = 0;
        return -1;
    }
    picosparse::ConvParams p;
    p.cin = cin, p.cout = cout, p.groups = groups, p.h = h, p.w = w, p.k = k, p.stride = stride;
    p.pad_t = pads[0], p.pad_l = pads[1], p.pad_b = pads[2], p.pad_r = pads[3];
    p.wt = wt, p.bias = bias, p.act = act, p.alpha = alpha, p.beta = beta;
    if (pool) {
        p.pool_k = pool[0], p.pool_s = pool[1];
        p.pool_pad_t = pool[2], p.pool_pad_l = pool[3], p.pool_pad_b = pool[4];
        p.pool_pad_r = pool[5];
    }
    p.in_blocked = layout & 1, p.out_blocked = (layout >> 1) & 1;
    if (const char* why = picosparse::conv_layout_error(p, isa)) {
        if (err && errlen > 0) std::snprintf(err, (size_t)errlen, "%s", why);
        return -1;
    }
    picosparse::conv2d(p, x, y, n, isa, threads < 1 ? 1 : threads);
    return isa;
}

}  // extern "C"
