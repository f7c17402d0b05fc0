import Foundation

/// mlx's float block quantization (modes mxfp4, mxfp8 and nvfp4), as mlx 0.32.4 computes it on
/// the CPU: the CPU runs the op graph of ops.cpp `fp_quantize` / `fp_dequantize`, with the MX block
/// scales rounded up (ml-explore/mlx PR 4353, in 0.32.4: its libmlx has `to_fp8_e8m0_round_up`,
/// and mx.quantize's scales match only with it). Checked bit for bit against mx.quantize and
/// mx.dequantize by fixturegen/mlx_quantized.py.
///
/// Codes are a little-endian stream as the affine 4- and 8-bit ones (element 0 in the low bits of
/// the first uint32): 4-bit indices into E2M1's sixteen values, or E4M3 bytes. One uint8 scale per
/// group of a row: an E8M0 exponent (biased by 127) for mxfp4 and mxfp8 (group 32), an E4M3 value
/// for nvfp4 (group 16). No biases; no global scale (mlx-lm writes one only on switch layers).
enum FloatBlockQuantizer {
    /// E2M1 by code: the sign in bit 3, then 0, 0.5, 1, 1.5, 2, 3, 4, 6 (mlx's lookup table).
    static let e2m1: [Float] = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6]

    /// What a group's largest magnitude maps to: E2M1's 6 or E4M3's 448.
    static func largestCode(_ mode: MLXQuantization.Mode) -> Float { mode == .mxfp8 ? 448 : 6 }

    /// mx.dequantize: code value × scale, the scale decoded into `dtype` (2^(e − 127) or the E4M3
    /// value, each rounded to it: fp16 flushes 2^-25 and below to 0) and the product rounded to it.
    /// mx.dequantize's default dtype, and mlx-lm's when it dequantizes or fuses, is bf16.
    static func dequantize(codes: UnsafeRawBufferPointer, scales: UnsafeRawBufferPointer, mode: MLXQuantization.Mode, dtype: DType,
                           elements range: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) {
        let groupSize = mode.groupSize, bits = mode.bits
        var element = range.lowerBound, offset = 0
        while element < range.upperBound {
            let group = element / groupSize
            let end = Swift.min(range.upperBound, (group + 1) * groupSize)
            let scale = AffineQuantizer.rounded(decodedScale(scales[group], mode: mode), to: dtype)
            for index in element..<end {
                let code = AffineQuantizer.code(codes, at: index, bits: bits)
                let value = bits == 4 ? e2m1[Int(code)] : e4m3Value(UInt8(code))
                destination[offset] = AffineQuantizer.rounded(value * scale, to: dtype)
                offset += 1
            }
            element = end
        }
    }

    /// mx.quantize of `values` (whole groups) held in `dtype`, each step computed in fp32 and
    /// rounded to it as mlx's graph does (merges quantize fp32; mlx_lm.fuse hands it bf16): per
    /// group s = max|w| / (6 or 448); mxfp's exponent is the smallest n with 2^n ≥ s (rint(log2 s),
    /// log2 rounded to the dtype, raised by one when 2^n < s; 0 for an all-zero group), the
    /// elements w / 2^n; nvfp4's scale is E4M3(s) and the elements w / that. E2M1 codes are the
    /// nearest of the sixteen values by |w − v| (in the dtype; fp32 for nvfp4, whose graph
    /// multiplies by an fp32 1), ties to the lower code (mlx's argmin: 0.25 → 0, 0.75 → 0.5,
    /// −0.1 → +0); E4M3 rounds to nearest even and saturates at 448.
    static func quantize(_ values: UnsafeBufferPointer<Float>, mode: MLXQuantization.Mode, dtype: DType = .f32) -> (codes: [UInt8], scales: [UInt8]) {
        let groupSize = mode.groupSize, bits = mode.bits
        let groups = values.count / groupSize
        var codes = [UInt8](repeating: 0, count: values.count * bits / 8)
        var scales = [UInt8](repeating: 0, count: groups)
        for group in 0..<groups {
            let start = group * groupSize
            var largest: Float = -.infinity
            for index in start..<(start + groupSize) { largest = Swift.max(largest, abs(values[index])) }
            let target = AffineQuantizer.rounded(largest / largestCode(mode), to: dtype)
            let divisor: Float
            if mode == .nvfp4 {
                scales[group] = e4m3Code(target)
                divisor = e4m3Value(scales[group])
            } else {
                let exponent = target == 0 ? 0 : blockExponent(target, dtype: dtype)
                // An exponent below −127 needs max|w| under 6·2^-127; mlx's uint8 cast is then undefined.
                scales[group] = UInt8(clamping: exponent + 127)
                divisor = powerOfTwo(exponent)
            }
            for index in start..<(start + groupSize) {
                let scaled = AffineQuantizer.rounded(values[index] / divisor, to: dtype)
                let code = bits == 4 ? UInt32(nearestE2M1(scaled, dtype: mode == .nvfp4 ? .f32 : dtype)) : UInt32(e4m3Code(scaled))
                codes[index * bits / 8] |= UInt8(truncatingIfNeeded: code << UInt32((index * bits) % 8))
            }
        }
        return (codes, scales)
    }

    /// The smallest n with 2^n ≥ s, found as mlx does: rint(log2f(s)) (glibc's log2f, which mlx's
    /// CPU calls too, rounded to the input's dtype), raised by one when that power is below s.
    static func blockExponent(_ target: Float, dtype: DType = .f32) -> Int {
        let rounded = Int(AffineQuantizer.rounded(log2(target), to: dtype).rounded(.toNearestOrEven))
        return powerOfTwo(rounded) < target ? rounded + 1 : rounded
    }

    /// The code of the nearest E2M1 value, the lowest code on a tie (a NaN gives 0, as mlx's argmin).
    static func nearestE2M1(_ value: Float, dtype: DType = .f32) -> UInt8 {
        var best: UInt8 = 0, distance = abs(AffineQuantizer.rounded(value - e2m1[0], to: dtype))
        for code in 1..<e2m1.count {
            let candidate = abs(AffineQuantizer.rounded(value - e2m1[code], to: dtype))
            if candidate < distance {
                distance = candidate
                best = UInt8(code)
            }
        }
        return best
    }

    /// E4M3 (bias 7, no infinities) of `value` as mlx's to_fp8 computes it: round to nearest even,
    /// 464 and beyond — infinities and NaN too — saturated to ±448 (0x7E), signed zeros kept.
    static func e4m3Code(_ value: Float) -> UInt8 {
        let sign: UInt8 = value.sign == .minus ? 0x80 : 0
        let magnitude = abs(value)
        guard magnitude < 464 else { return sign | 0x7E }
        // Subnormals are multiples of 2^-9 below 2^-6; rounding 8·2^-9 up gives the smallest normal's code.
        if magnitude < 0x1p-6 { return sign | UInt8((magnitude * 512).rounded(.toNearestOrEven)) }
        let exponent = Int(magnitude.exponent)
        let mantissa = Int(((magnitude / powerOfTwo(exponent) - 1) * 8).rounded(.toNearestOrEven))
        // A mantissa rounded up to 8 carries into the exponent field.
        return sign | UInt8((exponent + 7) << 3 + mantissa)
    }

    /// The E4M3 value of `code`; 0x7F and 0xFF are NaN (mx.from_fp8 in 0.32.4).
    static func e4m3Value(_ code: UInt8) -> Float {
        let exponent = Int(code >> 3) & 0xF, mantissa = Float(code & 7)
        let magnitude: Float
        if code & 0x7F == 0x7F { magnitude = .nan }
        else if exponent == 0 { magnitude = mantissa * 0x1p-9 }
        else { magnitude = (8 + mantissa) * powerOfTwo(exponent - 10) }
        return code & 0x80 != 0 ? -magnitude : magnitude
    }

    /// A stored scale as a float: 2^(byte − 127) (byte 255 is 2^128, infinite) or the E4M3 value.
    static func decodedScale(_ byte: UInt8, mode: MLXQuantization.Mode) -> Float {
        mode == .nvfp4 ? e4m3Value(byte) : powerOfTwo(Int(byte) - 127)
    }

    /// 2^n in fp32, subnormal below 2^-126, 0 below 2^-149 and infinite from 2^128.
    static func powerOfTwo(_ n: Int) -> Float {
        Float(sign: .plus, exponent: n, significand: 1)
    }
}
