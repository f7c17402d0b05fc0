/* Scalar conversions shared by the kernels (private to this target). Narrowing rounds to
 * nearest, ties to even; NaN stays NaN (quiet). */
#ifndef PEFTPACK_SCALAR_CONVERT_H
#define PEFTPACK_SCALAR_CONVERT_H
#include <stdint.h>
#include <string.h>

static inline uint32_t bits_of(float value) { uint32_t bits; memcpy(&bits, &value, 4); return bits; }
static inline float float_of(uint32_t bits) { float value; memcpy(&value, &bits, 4); return value; }

static inline uint16_t scalar_f32_to_bf16(float value) {
    uint32_t x = bits_of(value);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((x >> 16) | 0x0040u);
    return (uint16_t)((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

static inline float scalar_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1Fu;
    uint32_t mantissa = h & 0x3FFu;
    if (exponent == 0x1Fu) return float_of(sign | 0x7F800000u | (mantissa << 13) | (mantissa ? 0x00400000u : 0));
    if (exponent == 0) {
        /* Subnormal or zero: value = mantissa * 2^-24, exact in float32. */
        float magnitude = (float)mantissa * 5.9604644775390625e-8f;
        return float_of(sign | bits_of(magnitude));
    }
    return float_of(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

static inline uint16_t scalar_f32_to_f16(float value) {
    uint32_t x = bits_of(value);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t magnitude = x & 0x7FFFFFFFu;
    if (magnitude > 0x7F800000u) return sign | 0x7E00u | (uint16_t)((magnitude >> 13) & 0x3FFu);
    if (magnitude >= 0x477FF000u) return sign | 0x7C00u; /* rounds to >= 65520: infinity */
    if (magnitude < 0x38800000u) {
        /* Result is subnormal (or zero): scale so the f16 ulp (2^-24) becomes 1.0 and let the
         * FPU round to nearest even. */
        float scaled = float_of(magnitude) * 16777216.0f;
        uint32_t rounded = (uint32_t)__builtin_rintf(scaled);
        return sign | (uint16_t)rounded;
    }
    uint32_t rebased = magnitude - (112u << 23);
    uint32_t rounded = rebased + 0xFFFu + ((rebased >> 13) & 1u);
    return sign | (uint16_t)(rounded >> 13);
}

#endif
