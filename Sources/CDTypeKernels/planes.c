#include "CDTypeKernels.h"
#include <string.h>
#include "vector_isa.h"

/* Plain loops over restrict pointers: the compiler vectorizes them (SSE2 baseline, AVX2 clones
 * below where the CPU has it and the build has them). */
#if PEFTPACK_X86_KERNELS
#define PLANE_KERNEL(name, params, ...) \
    __attribute__((target("avx2"))) static void name##_avx2 params __VA_ARGS__ \
    static void name##_base params __VA_ARGS__
#else
#define PLANE_KERNEL(name, params, ...) static void name##_base params __VA_ARGS__
#endif

PLANE_KERNEL(split_bf16, (const uint16_t *restrict s, uint8_t *restrict p, size_t n), {
    uint8_t *restrict e = p, *restrict m = p + n;
    for (size_t i = 0; i < n; i++) {
        uint16_t x = s[i];
        e[i] = (uint8_t)(x >> 7);
        m[i] = (uint8_t)(((x >> 8) & 0x80) | (x & 0x7F));
    }
})

PLANE_KERNEL(merge_bf16, (const uint8_t *restrict p, uint16_t *restrict d, size_t n), {
    const uint8_t *restrict e = p, *restrict m = p + n;
    for (size_t i = 0; i < n; i++) {
        uint16_t low = m[i];
        d[i] = (uint16_t)(((low & 0x80) << 8) | ((uint16_t)e[i] << 7) | (low & 0x7F));
    }
})

PLANE_KERNEL(split_f16, (const uint16_t *restrict s, uint8_t *restrict p, size_t n), {
    uint8_t *restrict hi = p, *restrict lo = p + n;
    for (size_t i = 0; i < n; i++) { hi[i] = (uint8_t)(s[i] >> 8); lo[i] = (uint8_t)s[i]; }
})

PLANE_KERNEL(merge_f16, (const uint8_t *restrict p, uint16_t *restrict d, size_t n), {
    const uint8_t *restrict hi = p, *restrict lo = p + n;
    for (size_t i = 0; i < n; i++) d[i] = (uint16_t)(((uint16_t)hi[i] << 8) | lo[i]);
})

PLANE_KERNEL(split_f32, (const uint32_t *restrict s, uint8_t *restrict p, size_t n), {
    uint8_t *restrict p0 = p, *restrict p1 = p + n, *restrict p2 = p + 2 * n, *restrict p3 = p + 3 * n;
    for (size_t i = 0; i < n; i++) {
        uint32_t x = s[i];
        p0[i] = (uint8_t)(x >> 23);
        p1[i] = (uint8_t)(((x >> 24) & 0x80) | ((x >> 16) & 0x7F));
        p2[i] = (uint8_t)(x >> 8);
        p3[i] = (uint8_t)x;
    }
})

PLANE_KERNEL(merge_f32, (const uint8_t *restrict p, uint32_t *restrict d, size_t n), {
    const uint8_t *restrict p0 = p, *restrict p1 = p + n, *restrict p2 = p + 2 * n, *restrict p3 = p + 3 * n;
    for (size_t i = 0; i < n; i++) {
        uint32_t high = p1[i];
        d[i] = ((high & 0x80) << 24) | ((uint32_t)p0[i] << 23) | ((high & 0x7F) << 16) | ((uint32_t)p2[i] << 8) | p3[i];
    }
})

#if PEFTPACK_X86_KERNELS
#define DISPATCH(name, params, args) \
    void peftpack_##name params { \
        if (cpu_has_avx2()) name##_avx2 args; else name##_base args; \
    }
#else
#define DISPATCH(name, params, args) \
    void peftpack_##name params { name##_base args; }
#endif

DISPATCH(split_bf16, (const uint16_t *source, uint8_t *planes, size_t count), (source, planes, count))
DISPATCH(merge_bf16, (const uint8_t *planes, uint16_t *destination, size_t count), (planes, destination, count))
DISPATCH(split_f16, (const uint16_t *source, uint8_t *planes, size_t count), (source, planes, count))
DISPATCH(merge_f16, (const uint8_t *planes, uint16_t *destination, size_t count), (planes, destination, count))
DISPATCH(split_f32, (const uint32_t *source, uint8_t *planes, size_t count), (source, planes, count))
DISPATCH(merge_f32, (const uint8_t *planes, uint32_t *destination, size_t count), (planes, destination, count))
