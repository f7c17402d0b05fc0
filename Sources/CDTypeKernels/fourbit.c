#include "CDTypeKernels.h"
#include <math.h>
#include <string.h>
#include "vector_isa.h"

/* The inner loops of bitsandbytes' 4-bit blockwise (de)quantization; the semantics, and why each
 * comparison is written the way it is, are in FourBitQuantizer.swift / FourBitDequantizer.swift.
 * Every comparison is ordered so that a NaN takes the same branch as Swift's min/max there; the
 * AVX2 path uses MAXPS/MINPS with the operands in the order that makes them those same branches
 * (MAXPS a, b = a > b ? a : b), so both paths give the same bits. */

enum { MAX_BLOCKSIZE = 4096 };

/* The number of the 15 sorted bounds strictly below `scaled` (torch.bucketize, right=False). */
static inline uint8_t bucket(float scaled, const float *bounds) {
    uint8_t below = 0;
    for (int k = 0; k < 15; k++) below += bounds[k] < scaled;
    return below;
}

static inline float clamped(float scaled) {
    scaled = -1.0f >= scaled ? -1.0f : scaled;
    return 1.0f < scaled ? 1.0f : scaled;
}

static float block_max_scalar(const float *x, size_t n) {
    float largest = 0;
    for (size_t i = 0; i < n; i++) {
        float magnitude = fabsf(x[i]);
        largest = magnitude >= largest ? magnitude : largest;
    }
    return largest;
}

/* codes[i] = bucket of clamp(x[i] · factor) (or x[i] / factor when dividing). */
static void buckets_scalar(const float *x, size_t n, float factor, int divide, const float *bounds, uint8_t *codes) {
    for (size_t i = 0; i < n; i++) codes[i] = bucket(clamped(divide ? x[i] / factor : x[i] * factor), bounds);
}

#if PEFTPACK_X86_KERNELS
__attribute__((target("avx2")))
static float block_max_avx2(const float *x, size_t n) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 largest = _mm256_setzero_ps();
    size_t i = 0;
    /* MAXPS magnitude, largest: a NaN magnitude leaves `largest`, as the scalar loop does. The
     * maximum of non-NaN values does not depend on the order they are taken in. */
    for (; i + 8 <= n; i += 8) largest = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)), largest);
    float lanes[8];
    _mm256_storeu_ps(lanes, largest);
    float result = block_max_scalar(lanes, 8);
    float rest = block_max_scalar(x + i, n - i);
    return rest >= result ? rest : result;
}

__attribute__((target("avx2")))
static void buckets_avx2(const float *x, size_t n, float factor, int divide, const float *bounds, uint8_t *codes) {
    const __m256 low = _mm256_set1_ps(-1.0f), high = _mm256_set1_ps(1.0f), scale = _mm256_set1_ps(factor);
    __m256 bound[15];
    for (int k = 0; k < 15; k++) bound[k] = _mm256_set1_ps(bounds[k]);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        v = divide ? _mm256_div_ps(v, scale) : _mm256_mul_ps(v, scale);
        v = _mm256_max_ps(low, v);  /* -1 > v ? -1 : v */
        v = _mm256_min_ps(high, v); /* 1 < v ? 1 : v */
        __m256i below = _mm256_setzero_si256();
        for (int k = 0; k < 15; k++) below = _mm256_sub_epi32(below, _mm256_castps_si256(_mm256_cmp_ps(bound[k], v, _CMP_LT_OQ)));
        __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(below), _mm256_extracti128_si256(below, 1));
        _mm_storel_epi64((__m128i *)(codes + i), _mm_packus_epi16(words, words));
    }
    buckets_scalar(x + i, n - i, factor, divide, bounds, codes + i);
}
#endif

void peftpack_quantize_4bit(const float *values, size_t count, size_t blocksize, const float *bounds,
                            const uint8_t *order, uint8_t *packed, float *absmax) {
    uint8_t codes[MAX_BLOCKSIZE + 1];
    size_t whole = count / blocksize;
    size_t blocks = (count + blocksize - 1) / blocksize;
#if PEFTPACK_X86_KERNELS
    int vector = cpu_has_avx2();
#endif
    for (size_t block = 0; block < blocks; block++) {
        size_t start = block * blocksize;
        size_t n = count - start < blocksize ? count - start : blocksize;
        const float *x = values + start;
        float largest;
#if PEFTPACK_X86_KERNELS
        largest = vector ? block_max_avx2(x, n) : block_max_scalar(x, n);
#else
        largest = block_max_scalar(x, n);
#endif
        float scale = 1e-38f >= largest ? 1e-38f : largest;
        int is_whole = block < whole;
        absmax[block] = is_whole ? largest : scale;
        float factor = is_whole ? 1.0f / scale : scale;
#if PEFTPACK_X86_KERNELS
        if (vector) buckets_avx2(x, n, factor, !is_whole, bounds, codes);
        else buckets_scalar(x, n, factor, !is_whole, bounds, codes);
#else
        buckets_scalar(x, n, factor, !is_whole, bounds, codes);
#endif
        if (n % 2 == 1) codes[n++] = bucket(0.0f, bounds);
        uint8_t *out = packed + start / 2;
        for (size_t i = 0; i < n; i += 2) out[i / 2] = (uint8_t)(order[codes[i]] << 4 | order[codes[i + 1]]);
    }
}

static void dequantize_scalar(const uint8_t *packed, size_t element, size_t end, const float *table, float scale, float *out) {
    for (; element < end; element++) {
        uint8_t byte = packed[element >> 1];
        *out++ = table[element & 1 ? byte & 0x0F : byte >> 4] * scale;
    }
}

#if PEFTPACK_X86_KERNELS
/* Elements [element, end) of one block, `element` even: 16 at a time from 8 bytes, each code
 * looked up in the two 8-entry halves of the table (VPERMPS uses an index's low 3 bits; bit 3
 * picks the half). */
__attribute__((target("avx2")))
static void dequantize_avx2(const uint8_t *packed, size_t element, size_t end, const float *table, float scale, float *out) {
    const __m256 lower = _mm256_loadu_ps(table), upper = _mm256_loadu_ps(table + 8), factor = _mm256_set1_ps(scale);
    const __m256i nibble = _mm256_set1_epi32(0x0F);
    for (; element + 16 <= end; element += 16, out += 16) {
        __m256i bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(packed + element / 2)));
        __m256i high = _mm256_srli_epi32(bytes, 4), low = _mm256_and_si256(bytes, nibble);
        __m256i first = _mm256_unpacklo_epi32(high, low), second = _mm256_unpackhi_epi32(high, low);
        __m256i in_order[2] = {_mm256_permute2x128_si256(first, second, 0x20), _mm256_permute2x128_si256(first, second, 0x31)};
        for (int half = 0; half < 2; half++) {
            __m256i code = in_order[half];
            __m256 value = _mm256_blendv_ps(_mm256_permutevar8x32_ps(lower, code), _mm256_permutevar8x32_ps(upper, code),
                                            _mm256_castsi256_ps(_mm256_slli_epi32(code, 28)));
            _mm256_storeu_ps(out + 8 * half, _mm256_mul_ps(value, factor));
        }
    }
    dequantize_scalar(packed, element, end, table, scale, out);
}
#endif

void peftpack_dequantize_4bit(const uint8_t *packed, size_t first, size_t count, const float *table,
                              const float *scales, size_t blocksize, float *out) {
    size_t first_block = first / blocksize;
    size_t element = first, end = first + count;
#if PEFTPACK_X86_KERNELS
    int vector = cpu_has_avx2();
#endif
    while (element < end) {
        size_t block = element / blocksize;
        size_t block_end = (block + 1) * blocksize < end ? (block + 1) * blocksize : end;
        float scale = scales[block - first_block];
        if (element % 2 == 1) {
            dequantize_scalar(packed, element, element + 1, table, scale, out);
            element++;
            out++;
        }
#if PEFTPACK_X86_KERNELS
        if (vector) dequantize_avx2(packed, element, block_end, table, scale, out);
        else dequantize_scalar(packed, element, block_end, table, scale, out);
#else
        dequantize_scalar(packed, element, block_end, table, scale, out);
#endif
        out += block_end - element;
        element = block_end;
    }
}

size_t peftpack_equal_nibbles(const uint8_t *first, const uint8_t *second, size_t elements) {
    /* Eight bytes at a time: a nibble of the XOR is non-zero when any of its 4 bits is, folded
     * onto its lowest bit. */
    const uint64_t lowest = 0x1111111111111111ull;
    size_t equal = 0, byte = 0, bytes = elements / 2;
    for (; byte + 8 <= bytes; byte += 8) {
        uint64_t a, b;
        memcpy(&a, first + byte, 8);
        memcpy(&b, second + byte, 8);
        uint64_t differ = a ^ b;
        differ = (differ | differ >> 1 | differ >> 2 | differ >> 3) & lowest;
        equal += 16 - (size_t)__builtin_popcountll(differ);
    }
    for (; byte < bytes; byte++) {
        uint8_t differ = first[byte] ^ second[byte];
        equal += (differ & 0xF0) == 0;
        equal += (differ & 0x0F) == 0;
    }
    if (elements % 2 == 1) equal += ((first[elements / 2] ^ second[elements / 2]) & 0xF0) == 0;
    return equal;
}

size_t peftpack_equal_bytes(const uint8_t *first, const uint8_t *second, size_t count) {
    size_t equal = 0;
    for (size_t i = 0; i < count; i++) equal += first[i] == second[i];
    return equal;
}

/* Four interleaved partial sums, lane l taking the elements i ≡ l (mod 4), added pairwise at the
 * end: the AVX2 path (one fp64 lane each, multiply then add, never fused) gives the same bits. */
static void survival_lanes_scalar(const float *before, const float *merged, const float *after, size_t first, size_t count,
                                  double *kept, double *change, double *dot) {
    for (size_t i = first; i < count; i++) {
        double delta = (double)merged[i] - (double)before[i];
        double survived = (double)after[i] - (double)before[i];
        kept[i % 4] += survived * survived;
        change[i % 4] += delta * delta;
        dot[i % 4] += survived * delta;
    }
}

#if PEFTPACK_X86_KERNELS
__attribute__((target("avx2")))
static size_t survival_lanes_avx2(const float *before, const float *merged, const float *after, size_t count,
                                  double *kept, double *change, double *dot) {
    __m256d k = _mm256_setzero_pd(), c = _mm256_setzero_pd(), d = _mm256_setzero_pd();
    size_t i = 0;
    for (; i + 4 <= count; i += 4) {
        __m256d b = _mm256_cvtps_pd(_mm_loadu_ps(before + i));
        __m256d delta = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(merged + i)), b);
        __m256d survived = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(after + i)), b);
        k = _mm256_add_pd(k, _mm256_mul_pd(survived, survived));
        c = _mm256_add_pd(c, _mm256_mul_pd(delta, delta));
        d = _mm256_add_pd(d, _mm256_mul_pd(survived, delta));
    }
    _mm256_storeu_pd(kept, k);
    _mm256_storeu_pd(change, c);
    _mm256_storeu_pd(dot, d);
    return i;
}
#endif

void peftpack_survival_sums(const float *before, const float *merged, const float *after, size_t count, double *sums) {
    double kept[4] = {0, 0, 0, 0}, change[4] = {0, 0, 0, 0}, dot[4] = {0, 0, 0, 0};
    size_t done = 0;
#if PEFTPACK_X86_KERNELS
    if (cpu_has_avx2()) done = survival_lanes_avx2(before, merged, after, count, kept, change, dot);
#endif
    survival_lanes_scalar(before, merged, after, done, count, kept, change, dot);
    sums[0] = (kept[0] + kept[1]) + (kept[2] + kept[3]);
    sums[1] = (change[0] + change[1]) + (change[2] + change[3]);
    sums[2] = (dot[0] + dot[1]) + (dot[2] + dot[3]);
}
