// The ISAs every kernel is built for, in one place: a kernel body (FILE_impl.inc, written
// once over the vector traits `V` of simd.h) is instantiated by
//     #define PICOSPARSE_KERNEL_BODY "FILE_impl.inc"
//     #include "per_isa.inc"
// in namespaces portable / avx2 / avx512, the last two inside `#pragma GCC target` regions,
// so the library itself stays baseline x86-64 and picks its path at run time (select_isa).
// PICOSPARSE_PER_ISA(isa, f) is the instance of f for the ISA in use.
#pragma once

#define PICOSPARSE_PER_ISA(isa, f) \
    ((isa) == ISA_AVX512 ? avx512::f : (isa) == ISA_AVX2 ? avx2::f : portable::f)
