#include "CDTypeKernels.h"
#include <math.h>
#include "scalar_convert.h"
#include "vector_isa.h"

/* out = round(base + delta) with one rounding. The delta is fp64 (formed by dgemm), so base + delta
 * in fp64 is the exact merge to ~2^-53. The vector path rounds fp64 → fp32 → output type, both to
 * nearest even, and sends the rare groups where that can differ from a single rounding (the fp32
 * value on a midpoint of the output type) to the scalar path, which narrows through fp32 rounded
 * to odd: that equals rounding the fp64 value directly because fp32 carries at least 2·p + 2 bits
 * of every narrower type's precision p (Boldo & Melquiond, "When double rounding is odd"). fp32
 * outputs are the fp64 sum rounded to nearest even. */

static inline float load_element(int type, const void *values, size_t index) {
    switch (type) {
    case PEFTPACK_ELEMENT_BF16: return float_of((uint32_t)((const uint16_t *)values)[index] << 16);
    case PEFTPACK_ELEMENT_F16: return scalar_f16_to_f32(((const uint16_t *)values)[index]);
    default: return ((const float *)values)[index];
    }
}

/* Bits of the element as stored in `type` after rounding `value` (already rounded to odd when
 * narrowing). */
static inline uint32_t rounded_bits(int type, float value) {
    switch (type) {
    case PEFTPACK_ELEMENT_BF16: return scalar_f32_to_bf16(value);
    case PEFTPACK_ELEMENT_F16: return scalar_f32_to_f16(value);
    default: return bits_of(value);
    }
}

static inline void store_bits(int type, void *values, size_t index, uint32_t bits) {
    if (type == PEFTPACK_ELEMENT_F32) ((uint32_t *)values)[index] = bits;
    else ((uint16_t *)values)[index] = (uint16_t)bits;
}

/* fp64 → fp32 rounded to odd: truncate toward zero, then set the last bit if anything was cut. */
static inline float round_to_odd(double value) {
    float nearest = (float)value;
    if ((double)nearest == value || !isfinite(nearest)) return nearest;
    uint32_t bits = bits_of(nearest);
    if (fabs((double)nearest) > fabs(value)) bits -= 1;
    return float_of(bits | 1u);
}

/* The exponent field of out_type, all ones: NaN or ±Inf. */
static inline uint32_t exponent_mask(int type) {
    switch (type) {
    case PEFTPACK_ELEMENT_BF16: return 0x7F80u;
    case PEFTPACK_ELEMENT_F16: return 0x7C00u;
    default: return 0x7F800000u;
    }
}

static inline int is_nonfinite_bits(int type, uint32_t bits) {
    return (bits & exponent_mask(type)) == exponent_mask(type);
}

static void merge_scalar(int base_type, const void *base, const double *delta, int out_type, void *out,
                         size_t first, size_t count, peftpack_merge_stats *stats) {
    for (size_t i = first; i < count; i++) {
        float a = load_element(base_type, base, i);
        double b = delta[i], sum = (double)a + b;
        uint32_t bits = rounded_bits(out_type, out_type == PEFTPACK_ELEMENT_F32 ? (float)sum : round_to_odd(sum));
        store_bits(out_type, out, i, bits);
        if (is_nonfinite_bits(out_type, bits) && isfinite(a)) stats->nonfinite += 1;
        if (b != 0.0 || b != b) {
            stats->changed += 1;
            if (bits == rounded_bits(out_type, a)) stats->lost += 1;
            if (fabs(b) > stats->max_abs_delta) stats->max_abs_delta = fabs(b);
        }
    }
}

#if PEFTPACK_X86_KERNELS
__attribute__((target("avx2,f16c")))
static inline __m256 load8(int type, const void *values, size_t index) {
    switch (type) {
    case PEFTPACK_ELEMENT_BF16: {
        __m128i half = _mm_loadu_si128((const __m128i *)((const uint16_t *)values + index));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(half), 16));
    }
    case PEFTPACK_ELEMENT_F16:
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)values + index)));
    default: return _mm256_loadu_ps((const float *)values + index);
    }
}

/* Rounded element bits in the low 16 (or all 32) bits of each lane. */
__attribute__((target("avx2,f16c")))
static inline __m256i round8(int type, __m256 value) {
    switch (type) {
    case PEFTPACK_ELEMENT_BF16: {
        __m256i x = _mm256_castps_si256(value);
        __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
        __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7FFF)), lsb), 16);
        __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x7FFFFFFF)), _mm256_set1_epi32(0x7F800000));
        __m256i nan_bits = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x0040));
        return _mm256_blendv_epi8(rounded, nan_bits, nan);
    }
    case PEFTPACK_ELEMENT_F16:
        return _mm256_cvtepu16_epi32(_mm256_cvtps_ph(value, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    default: return _mm256_castps_si256(value);
    }
}

/* Eight base elements plus their fp64 deltas, rounded to nearest fp32. */
__attribute__((target("avx2,f16c")))
static inline __m256 sum8(__m256 a, __m256d b_low, __m256d b_high, __m256d *s_low, __m256d *s_high) {
    *s_low = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(a)), b_low);
    *s_high = _mm256_add_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)), b_high);
    return _mm256_set_m128(_mm256_cvtpd_ps(*s_high), _mm256_cvtpd_ps(*s_low));
}

/* Lanes where the fp32-rounded sum may sit on a midpoint of the narrow type while the fp64 sum
 * is not exactly there; only then can fp64 → fp32 → narrow differ from fp64 → narrow (rounding
 * is monotonic, so a value on either side of a midpoint stays on that side in fp32). bf16
 * midpoints have low bits 0x8000; every f16 midpoint, subnormal ones included, has its low 12
 * bits zero. */
__attribute__((target("avx2,f16c")))
static inline int possible_double_rounding(int out_type, __m256 narrowed, __m256d s_low, __m256d s_high) {
    __m256i bits = _mm256_castps_si256(narrowed);
    __m256i suspicious = out_type == PEFTPACK_ELEMENT_BF16
        ? _mm256_cmpeq_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0xFFFF)), _mm256_set1_epi32(0x8000))
        : _mm256_cmpeq_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0xFFF)), _mm256_setzero_si256());
    if (_mm256_testz_si256(suspicious, suspicious)) return 0;
    __m256d inexact_low = _mm256_cmp_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(narrowed)), s_low, _CMP_NEQ_OQ);
    __m256d inexact_high = _mm256_cmp_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(narrowed, 1)), s_high, _CMP_NEQ_OQ);
    int inexact = _mm256_movemask_pd(inexact_low) | _mm256_movemask_pd(inexact_high) << 4;
    return (inexact & _mm256_movemask_ps(_mm256_castsi256_ps(suspicious))) != 0;
}

__attribute__((target("avx2,f16c,popcnt")))
static void merge_avx2(int base_type, const void *base, const double *delta, int out_type, void *out,
                       size_t count, peftpack_merge_stats *stats) {
    const __m256d zero = _mm256_setzero_pd();
    const __m256d magnitude = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7FFFFFFFFFFFFFFFll));
    __m256d largest = zero;
    const __m256i out_exponent = _mm256_set1_epi32((int)exponent_mask(out_type));
    const __m256i f32_exponent = _mm256_set1_epi32(0x7F800000);
    uint64_t changed = 0, lost = 0, nonfinite = 0;
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256 a = load8(base_type, base, i);
        __m256d b_low = _mm256_loadu_pd(delta + i), b_high = _mm256_loadu_pd(delta + i + 4);
        __m256d s_low, s_high;
        __m256 narrowed = sum8(a, b_low, b_high, &s_low, &s_high);
        if (out_type != PEFTPACK_ELEMENT_F32 && possible_double_rounding(out_type, narrowed, s_low, s_high)) {
            merge_scalar(base_type, base, delta, out_type, out, i, i + 8, stats);
            continue;
        }
        __m256i result = round8(out_type, narrowed);
        if (out_type == PEFTPACK_ELEMENT_F32) {
            _mm256_storeu_si256((__m256i *)((uint32_t *)out + i), result);
        } else {
            __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(result), _mm256_extracti128_si256(result, 1));
            _mm_storeu_si128((__m128i *)((uint16_t *)out + i), packed);
        }
        /* NaN/Inf out of a finite base: a handful of integer ops per 8 elements, off the memory path. */
        __m256i out_special = _mm256_cmpeq_epi32(_mm256_and_si256(result, out_exponent), out_exponent);
        __m256i base_special = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(a), f32_exponent), f32_exponent);
        int made_nonfinite = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_andnot_si256(base_special, out_special)));
        if (made_nonfinite) nonfinite += (uint64_t)__builtin_popcount(made_nonfinite);
        int changed_mask = _mm256_movemask_pd(_mm256_cmp_pd(b_low, zero, _CMP_NEQ_UQ))
                         | _mm256_movemask_pd(_mm256_cmp_pd(b_high, zero, _CMP_NEQ_UQ)) << 4;
        if (changed_mask) {
            __m256i baseline = base_type == out_type && out_type != PEFTPACK_ELEMENT_F16
                ? (out_type == PEFTPACK_ELEMENT_BF16 ? _mm256_srli_epi32(_mm256_castps_si256(a), 16) : _mm256_castps_si256(a))
                : round8(out_type, a);
            int same = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(result, baseline)));
            changed += (uint64_t)__builtin_popcount(changed_mask);
            lost += (uint64_t)__builtin_popcount(changed_mask & same);
            largest = _mm256_max_pd(largest, _mm256_max_pd(_mm256_and_pd(b_low, magnitude), _mm256_and_pd(b_high, magnitude)));
        }
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, largest);
    for (int lane = 0; lane < 4; lane++)
        if (lanes[lane] > stats->max_abs_delta) stats->max_abs_delta = lanes[lane];
    stats->changed += changed;
    stats->lost += lost;
    stats->nonfinite += nonfinite;
    merge_scalar(base_type, base, delta, out_type, out, i, count, stats);
}
#endif

void peftpack_merge_add(int base_type, const void *base, const double *delta, int out_type, void *out, size_t count,
                        peftpack_merge_stats *stats) {
#if PEFTPACK_X86_KERNELS
    if (cpu_has_avx2_f16c()) {
        merge_avx2(base_type, base, delta, out_type, out, count, stats);
        return;
    }
#endif
    merge_scalar(base_type, base, delta, out_type, out, 0, count, stats);
}
