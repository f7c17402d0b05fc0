#include "CDTypeKernels.h"
#include <string.h>
#include "scalar_convert.h"
#include "vector_isa.h"

#if PEFTPACK_X86_KERNELS
__attribute__((target("avx2")))
static void bf16_to_f32_avx2(const uint16_t *source, float *destination, size_t count) {
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m128i half = _mm_loadu_si128((const __m128i *)(source + i));
        __m256i wide = _mm256_slli_epi32(_mm256_cvtepu16_epi32(half), 16);
        _mm256_storeu_si256((__m256i *)(destination + i), wide);
    }
    for (; i < count; i++) destination[i] = float_of((uint32_t)source[i] << 16);
}

__attribute__((target("avx2")))
static void f32_to_bf16_avx2(const float *source, uint16_t *destination, size_t count) {
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7FFF);
    const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF), infinity = _mm256_set1_epi32(0x7F800000);
    const __m256i quiet = _mm256_set1_epi32(0x0040);
    size_t i = 0;
    for (; i + 16 <= count; i += 16) {
        __m256i halves[2];
        for (int part = 0; part < 2; part++) {
            __m256i x = _mm256_loadu_si256((const __m256i *)(source + i + 8 * part));
            __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), one);
            __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(x, bias), lsb), 16);
            __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, abs_mask), infinity);
            __m256i nan_bits = _mm256_or_si256(_mm256_srli_epi32(x, 16), quiet);
            halves[part] = _mm256_blendv_epi8(rounded, nan_bits, nan);
        }
        __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(halves[0], halves[1]), 0xD8);
        _mm256_storeu_si256((__m256i *)(destination + i), packed);
    }
    for (; i < count; i++) destination[i] = scalar_f32_to_bf16(source[i]);
}

__attribute__((target("avx2,f16c")))
static void f16_to_f32_f16c(const uint16_t *source, float *destination, size_t count) {
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        _mm256_storeu_ps(destination + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(source + i))));
    }
    for (; i < count; i++) destination[i] = scalar_f16_to_f32(source[i]);
}

__attribute__((target("avx2,f16c")))
static void f32_to_f16_f16c(const float *source, uint16_t *destination, size_t count) {
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m128i half = _mm256_cvtps_ph(_mm256_loadu_ps(source + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128((__m128i *)(destination + i), half);
    }
    for (; i < count; i++) destination[i] = scalar_f32_to_f16(source[i]);
}

#endif

void peftpack_bf16_to_f32(const uint16_t *source, float *destination, size_t count) {
#if PEFTPACK_X86_KERNELS
    if (cpu_has_avx2()) { bf16_to_f32_avx2(source, destination, count); return; }
#endif
    for (size_t i = 0; i < count; i++) destination[i] = float_of((uint32_t)source[i] << 16);
}

void peftpack_f32_to_bf16(const float *source, uint16_t *destination, size_t count) {
#if PEFTPACK_X86_KERNELS
    if (cpu_has_avx2()) { f32_to_bf16_avx2(source, destination, count); return; }
#endif
    for (size_t i = 0; i < count; i++) destination[i] = scalar_f32_to_bf16(source[i]);
}

void peftpack_f16_to_f32(const uint16_t *source, float *destination, size_t count) {
#if PEFTPACK_X86_KERNELS
    if (cpu_has_avx2_f16c()) { f16_to_f32_f16c(source, destination, count); return; }
#endif
    for (size_t i = 0; i < count; i++) destination[i] = scalar_f16_to_f32(source[i]);
}

void peftpack_f32_to_f16(const float *source, uint16_t *destination, size_t count) {
#if PEFTPACK_X86_KERNELS
    if (cpu_has_avx2_f16c()) { f32_to_f16_f16c(source, destination, count); return; }
#endif
    for (size_t i = 0; i < count; i++) destination[i] = scalar_f32_to_f16(source[i]);
}

void peftpack_f64_to_f32(const double *source, float *destination, size_t count) {
    for (size_t i = 0; i < count; i++) destination[i] = (float)source[i];
}

void peftpack_f32_to_f64(const float *source, double *destination, size_t count) {
    for (size_t i = 0; i < count; i++) destination[i] = (double)source[i];
}
