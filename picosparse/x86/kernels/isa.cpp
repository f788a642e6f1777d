// Which ISA the kernels run: what the CPU supports, detected once; PICOSPARSE_ISA forces one.
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "api.h"
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

int vector_width(int isa) {
    return isa == ISA_AVX512 ? VAvx512::N : isa == ISA_AVX2 ? VAvx2::N : VPortable::N;
}

}  // namespace picosparse
