// The activations a conv can fuse, in one table: the kernels' codes, the OpenVINO ops'
// `activation` attribute values and the C API's codes (kernel.py asks the library for them)
// all come from PICOSPARSE_ACTIVATIONS. The math is activate.inc's, once per ISA.
#pragma once
#include <cstring>

namespace picosparse {

// X(code, attribute name); codes count from 0 in this order
#define PICOSPARSE_ACTIVATIONS(X) \
    X(ACT_NONE, "none")           \
    X(ACT_RELU, "relu")           \
    X(ACT_HSWISH, "hswish")       \
    X(ACT_HSIGMOID, "hsigmoid")   \
    X(ACT_LEAKY, "leaky")

enum Act : int {
#define PICOSPARSE_ACT_CODE(code, name) code,
    PICOSPARSE_ACTIVATIONS(PICOSPARSE_ACT_CODE)
#undef PICOSPARSE_ACT_CODE
};

// The code of an attribute name, -1 if there is none.
inline int act_code(const char* name) {
#define PICOSPARSE_ACT_MATCH(code, str) \
    if (std::strcmp(name, str) == 0) return code;
    PICOSPARSE_ACTIVATIONS(PICOSPARSE_ACT_MATCH)
#undef PICOSPARSE_ACT_MATCH
    return -1;
}

// An activation fused after a conv (+ folded BN). hsigmoid: clamp(alpha v + beta, 0, 1);
// leaky: slope alpha below 0.
struct Activation {
    int act = ACT_NONE;
    float alpha = 0.f, beta = 0.f;
};

}  // namespace picosparse
