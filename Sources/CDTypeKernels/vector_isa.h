/* Which vector code this build contains (private to this target). The AVX2/F16C kernels exist
 * only on x86-64: their intrinsics and __builtin_cpu_supports do not compile elsewhere (arm64).
 * Defining PEFTPACK_PORTABLE_KERNELS (swift build -Xcc -DPEFTPACK_PORTABLE_KERNELS, as
 * scripts/portable-kernels.sh does) leaves them out on x86-64 too, so the scalar path that other
 * architectures run is built and tested here. Both paths give the same bits. */
#ifndef PEFTPACK_VECTOR_ISA_H
#define PEFTPACK_VECTOR_ISA_H

#if defined(__x86_64__) && !defined(PEFTPACK_PORTABLE_KERNELS)
#define PEFTPACK_X86_KERNELS 1
#include <immintrin.h>
static inline int cpu_has_avx2(void) { return __builtin_cpu_supports("avx2"); }
static inline int cpu_has_avx2_f16c(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c"); }
#else
#define PEFTPACK_X86_KERNELS 0
#endif

#endif
