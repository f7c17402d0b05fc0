#ifndef PEFTPACK_CDTYPEKERNELS_H
#define PEFTPACK_CDTYPEKERNELS_H
#include <stddef.h>
#include <stdint.h>

/* Element-wise conversions between float32 and the 16-bit float formats. Narrowing rounds to
 * nearest, ties to even; NaN stays NaN (quiet), infinities and signed zeros are kept, subnormals
 * are exact. AVX2/F16C code is chosen at run time; a scalar path gives the same bits elsewhere.
 * Buffers may be unaligned and must not overlap. */
void peftpack_bf16_to_f32(const uint16_t *source, float *destination, size_t count);
void peftpack_f16_to_f32(const uint16_t *source, float *destination, size_t count);
void peftpack_f32_to_bf16(const float *source, uint16_t *destination, size_t count);
void peftpack_f32_to_f16(const float *source, uint16_t *destination, size_t count);
void peftpack_f64_to_f32(const double *source, float *destination, size_t count);
void peftpack_f32_to_f64(const float *source, double *destination, size_t count);


/* Byte planes of float data (spec/FORMAT.md §4): split n elements into planes of n bytes each,
 * stored one after another in `planes`, and back. */
void peftpack_split_bf16(const uint16_t *source, uint8_t *planes, size_t count);
void peftpack_merge_bf16(const uint8_t *planes, uint16_t *destination, size_t count);
void peftpack_split_f16(const uint16_t *source, uint8_t *planes, size_t count);
void peftpack_merge_f16(const uint8_t *planes, uint16_t *destination, size_t count);
void peftpack_split_f32(const uint32_t *source, uint8_t *planes, size_t count);
void peftpack_merge_f32(const uint8_t *planes, uint32_t *destination, size_t count);

/* Element types of peftpack_merge_add. */
enum { PEFTPACK_ELEMENT_F32 = 0, PEFTPACK_ELEMENT_BF16 = 1, PEFTPACK_ELEMENT_F16 = 2 };

typedef struct {
    uint64_t changed;      /* elements whose delta is non-zero */
    uint64_t lost;         /* ... of which the output equals the base rounded to the output type */
    double max_abs_delta;
    uint64_t nonfinite;    /* outputs that are NaN or ±Inf (overflow to out_type included) where the base is finite */
} peftpack_merge_stats;

/* out[i] = base[i] + delta[i] (fp64) rounded once (to nearest, ties to even) to out_type, with the
 * statistics accumulated into `stats`. base and out may be the same buffer only if they have
 * the same element type. */
void peftpack_merge_add(int base_type, const void *base, const double *delta, int out_type, void *out, size_t count,
                        peftpack_merge_stats *stats);
/* bitsandbytes 4-bit blockwise quantization (FourBitQuantizer.swift): `bounds` the 15 sorted
 * decision midpoints, `order` the code of each bucket; `packed` receives (count + 1) / 2 bytes,
 * high nibble first, `absmax` one value per block. blocksize is at most 4096 and even. */
void peftpack_quantize_4bit(const float *values, size_t count, size_t blocksize, const float *bounds,
                            const uint8_t *order, uint8_t *packed, float *absmax);
/* out[i] = table[code of element first + i] * scales[block of it − block of first], fp32. */
void peftpack_dequantize_4bit(const uint8_t *packed, size_t first, size_t count, const float *table,
                              const float *scales, size_t blocksize, float *out);
/* How many of `elements` 4-bit codes (two per byte, high nibble first) are equal in both; bytes alike. */
size_t peftpack_equal_nibbles(const uint8_t *first, const uint8_t *second, size_t elements);
size_t peftpack_equal_bytes(const uint8_t *first, const uint8_t *second, size_t count);
/* sums = {Σ (after − before)², Σ (merged − before)², Σ (after − before)(merged − before)}, each
 * difference and product in fp64 (QuantizationSurvival). */
void peftpack_survival_sums(const float *before, const float *merged, const float *after, size_t count, double *sums);
#endif
