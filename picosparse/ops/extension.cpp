// OpenVINO host for the sparse 1x1 convolution, plus a tiny C API (for ctypes tests) in the
// same shared library.
//
// Op "SparseConv1x1" (opset "picosparse"):
//   inputs  0: x      f32 [N, Cin, H, W]
//           1: rowptr i32 [Cout + 1]
//           2: cols   i32 [nnz + 1]   (one padding entry so nnz = 0 is still a non-empty constant)
//           3: vals   f32 [nnz + 1]
//           4: bias   f32 [Cout]
//   attrs   activation: none | relu | hswish | hsigmoid | leaky; alpha, beta (hsigmoid / leaky)
//   output  0: y      f32 [N, Cout, H, W]
// The CPU plugin runs it through evaluate() on plain NCHW buffers, inside its own TBB arena, so
// the kernel's tbb::parallel_for honours the thread count the user gave OpenVINO.
#include <cstring>
#include <string>

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
        ov::PartialShape out = ov::PartialShape::dynamic(4);
        if (xs.rank().is_static()) {
            NODE_VALIDATION_CHECK(this, xs.rank().get_length() == 4, "input must be NCHW");
            out = xs;
            out[1] = bs.rank().is_static() ? bs[0] : ov::Dimension::dynamic();
        }
        set_output_type(0, ov::element::f32, out);
    }

    std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& args) const override {
        return std::make_shared<SparseConv1x1>(args, m_activation, m_alpha, m_beta);
    }

    bool visit_attributes(ov::AttributeVisitor& v) override {
        v.on_attribute("activation", m_activation);
        v.on_attribute("alpha", m_alpha);
        v.on_attribute("beta", m_beta);
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
                  (int64_t)(xs[2] * xs[3]), isa, 0);
        return true;
    }

private:
    std::string m_activation = "none";
    float m_alpha = 0.f, m_beta = 0.f;
};

}  // namespace picosparse

OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>(
    {std::make_shared<ov::OpExtension<picosparse::SparseConv1x1>>()}));

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

}  // extern "C"
