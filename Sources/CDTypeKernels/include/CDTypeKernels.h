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
#endif
