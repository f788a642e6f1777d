// OpenVINO host for the sparse 1x1 convolution, plus a tiny C API (for ctypes tests) in the
// same shared library.
//
// Op "SparseConv1x1" (opset "picosparse"):
//   inputs  0: x      f32 [N, Cin, H, W]
//           1: rowptr i32 [Cout + 1]
//           2: cols   i32 [nnz + 1]   (one padding entry so nnz = 0 is still a non-empty constant)
//           3: vals   f32 [nnz + 1]
//           4: bias   f32 [Cout]
//   attrs   activation: none | relu | hswish | hsigmoid | leaky; alpha, beta (hsigmoid / leaky);
//           threads: 0 = the calling TBB arena's concurrency, n = exactly n
//           (load_model sets it: inside the CPU plugin, evaluate() runs in the default arena,
//           whose concurrency is the core count, not INFERENCE_NUM_THREADS)
//   output  0: y      f32 [N, Cout, H, W]
// The CPU plugin runs it through evaluate() on plain NCHW buffers.
#include <cstring>
#include <string>
#include <vector>

#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
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

class SparseConv1x1 : public ov::op::Op {
public:
    OPENVINO_OP("SparseConv1x1", "picosparse");

    SparseConv1x1() = default;
    SparseConv1x1(const ov::OutputVector& args, std::string activation, float alpha, float beta)
        : Op(args), m_activation(std::move(activation)), m_alpha(alpha), m_beta(beta) {
        constructor_validate_and_infer_types();
    }

    void validate_and_infer_types() override {
        NODE_VALIDATION_CHECK(this, get_input_size() == 5, "SparseConv1x1 takes 5 inputs");
        NODE_VALIDATION_CHECK(this, act_code(m_activation) >= 0, "unknown activation '",
                              m_activation, "'");
        NODE_VALIDATION_CHECK(this, get_input_element_type(0) == ov::element::f32,
                              "SparseConv1x1 input must be f32");
        const auto& xs = get_input_partial_shape(0);
        const auto& bs = get_input_partial_shape(4);
        const auto& rs = get_input_partial_shape(1);
        if (rs.is_static() && bs.is_static())
            NODE_VALIDATION_CHECK(this, rs.to_shape()[0] == bs.to_shape()[0] + 1,
                                  "rowptr must have Cout + 1 entries");
        ov::PartialShape out = ov::PartialShape::dynamic(4);
        if (xs.rank().is_static()) {
            NODE_VALIDATION_CHECK(this, xs.rank().get_length() == 4, "input must be NCHW");
            out = xs;
            out[1] = bs.rank().is_static() ? bs[0] : ov::Dimension::dynamic();
        }
        set_output_type(0, ov::element::f32, out);
    }

    std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& args) const override {
        auto op = std::make_shared<SparseConv1x1>(args, m_activation, m_alpha, m_beta);
        op->m_threads = m_threads;
        return op;
    }

    bool visit_attributes(ov::AttributeVisitor& v) override {
        v.on_attribute("activation", m_activation);
        v.on_attribute("alpha", m_alpha);
        v.on_attribute("beta", m_beta);
        v.on_attribute("threads", m_threads);
        return true;
    }

    bool has_evaluate() const override { return true; }

    bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
        const auto& x = inputs[0];
        const ov::Shape xs = x.get_shape();
        SparseWeights w;
        w.cout = (int)inputs[4].get_shape()[0];
        w.cin = (int)xs[1];
        w.rowptr = inputs[1].data<const int32_t>();
        w.cols = inputs[2].data<const int32_t>();
        w.vals = inputs[3].data<const float>();
        w.bias = inputs[4].data<const float>();
        w.act = act_code(m_activation);
        w.alpha = m_alpha;
        w.beta = m_beta;
        ov::Shape ys = xs;
        ys[1] = (size_t)w.cout;
        outputs[0].set_shape(ys);
        const char* err = nullptr;
        const int isa = select_isa(&err);
        if (isa < 0) OPENVINO_THROW("picosparse: ", err);
        spconv1x1(w, x.data<const float>(), outputs[0].data<float>(), (int)xs[0],
                  (int64_t)(xs[2] * xs[3]), isa, (int)m_threads);
        return true;
    }

private:
    std::string m_activation = "none";
    float m_alpha = 0.f, m_beta = 0.f;
    int64_t m_threads = 0;
};

// Op "DepthwiseConv2d" (opset "picosparse"): inputs x f32 [N, C, H, W], weights f32 [C, K, K]
// (BN folded), bias f32 [C]; attrs stride, pads (top, left, bottom, right), activation/alpha/
// beta. Plain NCHW like SparseConv1x1, so no layout reorders sit between the two.
class DepthwiseConv2d : public ov::op::Op {
public:
    OPENVINO_OP("DepthwiseConv2d", "picosparse");

    DepthwiseConv2d() = default;
    DepthwiseConv2d(const ov::OutputVector& args, int64_t stride, std::vector<int64_t> pads,
                    std::string activation, float alpha, float beta)
        : Op(args), m_stride(stride), m_pads(std::move(pads)),
          m_activation(std::move(activation)), m_alpha(alpha), m_beta(beta) {
        constructor_validate_and_infer_types();
    }

    DepthwiseParams params(const ov::Shape& xs, const ov::Shape& ws) const {
        DepthwiseParams p;
        p.c = (int)xs[1], p.h = (int)xs[2], p.w = (int)xs[3], p.k = (int)ws[1];
        p.stride = (int)m_stride;
        p.pad_t = (int)m_pads[0], p.pad_l = (int)m_pads[1];
        p.pad_b = (int)m_pads[2], p.pad_r = (int)m_pads[3];
        p.act = act_code(m_activation), p.alpha = m_alpha, p.beta = m_beta;
        return p;
    }

    void validate_and_infer_types() override {
        NODE_VALIDATION_CHECK(this, get_input_size() == 3, "DepthwiseConv2d takes 3 inputs");
        NODE_VALIDATION_CHECK(this, act_code(m_activation) >= 0, "unknown activation");
        NODE_VALIDATION_CHECK(this, m_pads.size() == 4 && m_stride >= 1, "bad stride/pads");
        const auto& xs = get_input_partial_shape(0);
        const auto& ws = get_input_partial_shape(1);
        if (xs.is_static() && ws.is_static()) {
            const auto p = params(xs.to_shape(), ws.to_shape());
            NODE_VALIDATION_CHECK(this, ws.to_shape()[0] == xs.to_shape()[1],
                                  "weights must be [C, K, K]");
            set_output_type(0, ov::element::f32,
                            ov::PartialShape{xs[0], xs[1], p.out_h(), p.out_w()});
        } else {
            set_output_type(0, ov::element::f32, ov::PartialShape::dynamic(4));
        }
    }

    std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& args) const override {
        auto op = std::make_shared<DepthwiseConv2d>(args, m_stride, m_pads, m_activation,
                                                    m_alpha, m_beta);
        op->m_threads = m_threads;
        return op;
    }

    bool visit_attributes(ov::AttributeVisitor& v) override {
        v.on_attribute("stride", m_stride);
        v.on_attribute("pads", m_pads);
        v.on_attribute("activation", m_activation);
        v.on_attribute("alpha", m_alpha);
        v.on_attribute("beta", m_beta);
        v.on_attribute("threads", m_threads);
        return true;
    }

    bool has_evaluate() const override { return true; }

    bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
        const ov::Shape xs = inputs[0].get_shape();
        DepthwiseParams p = params(xs, inputs[1].get_shape());
        p.wt = inputs[1].data<const float>();
        p.bias = inputs[2].data<const float>();
        outputs[0].set_shape(ov::Shape{xs[0], xs[1], (size_t)p.out_h(), (size_t)p.out_w()});
        const char* err = nullptr;
        const int isa = select_isa(&err);
        if (isa < 0) OPENVINO_THROW("picosparse: ", err);
        dwconv(p, inputs[0].data<const float>(), outputs[0].data<float>(), (int)xs[0], isa,
               (int)m_threads);
        return true;
    }

private:
    int64_t m_stride = 1;
    std::vector<int64_t> m_pads{0, 0, 0, 0};
    std::string m_activation = "none";
    float m_alpha = 0.f, m_beta = 0.f;
    int64_t m_threads = 0;
};

}  // namespace picosparse

OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>(
    {std::make_shared<ov::OpExtension<picosparse::SparseConv1x1>>(),
     std::make_shared<ov::OpExtension<picosparse::DepthwiseConv2d>>()}));

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
    int cin, int act, float alpha, float beta, const float* x, float* y, int n, int64_t hw,
    int threads, char* err, int errlen) {
    const char* e = nullptr;
    const int isa = picosparse::select_isa(&e);
    if (isa < 0) {
        if (err && errlen > 0) std::strncpy(err, e, (size_t)errlen - 1), err[errlen - 1] = 0;
        return -1;
    }
    picosparse::SparseWeights w;
    w.cout = cout, w.cin = cin, w.rowptr = rowptr, w.cols = cols, w.vals = vals, w.bias = bias;
    w.act = act, w.alpha = alpha, w.beta = beta;
    picosparse::spconv1x1(w, x, y, n, hw, isa, threads < 1 ? 1 : threads);
    return isa;
}

// Depthwise conv; pads = {top, left, bottom, right}. Returns the ISA used or -1 (see above).
__attribute__((visibility("default"))) int ps_dwconv(
    const float* wt, const float* bias, int c, int h, int w, int k, int stride, const int* pads,
    int act, float alpha, float beta, const float* x, float* y, int n, int threads, char* err,
    int errlen) {
    const char* e = nullptr;
    const int isa = picosparse::select_isa(&e);
    if (isa < 0) {
        if (err && errlen > 0) std::strncpy(err, e, (size_t)errlen - 1), err[errlen - 1] = 0;
        return -1;
    }
    picosparse::DepthwiseParams p;
    p.c = c, p.h = h, p.w = w, p.k = k, p.stride = stride;
    p.pad_t = pads[0], p.pad_l = pads[1], p.pad_b = pads[2], p.pad_r = pads[3];
    p.wt = wt, p.bias = bias, p.act = act, p.alpha = alpha, p.beta = beta;
    picosparse::dwconv(p, x, y, n, isa, threads < 1 ? 1 : threads);
    return isa;
}

}  // extern "C"
