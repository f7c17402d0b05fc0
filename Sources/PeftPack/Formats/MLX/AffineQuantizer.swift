/// mlx's affine quantization, as its CPU backend computes it (mlx 0.32 backend/cpu/quantized.cpp
/// `quantize`, ops.cpp `affine_dequantize`), so that values read and written match MLX bit for bit.
///
/// Codes are a little-endian bit stream over the row-major elements (element i in bits
/// i·bits ..< (i+1)·bits: the low bits of each uint32 hold the first element, and 3- and 6-bit
/// codes straddle words as mlx's byte packing does). One scale and one bias per `groupSize`
/// consecutive elements of a row, in the weight's own dtype.
enum AffineQuantizer {
    /// w = scale·q + bias as mx.dequantize computes it on the CPU: the product and the sum are
    /// two operations in the scales' dtype (each computed in fp32 and rounded to it), not a
    /// fused fp32 expression.
    static func dequantize(codes: UnsafeRawBufferPointer, scales: UnsafeRawBufferPointer, biases: UnsafeRawBufferPointer,
                           dtype: DType, groupSize: Int, bits: Int, elements range: Range<Int>,
                           into destination: UnsafeMutableBufferPointer<Float>) {
        var element = range.lowerBound, offset = 0
        while element < range.upperBound {
            let group = element / groupSize
            let end = Swift.min(range.upperBound, (group + 1) * groupSize)
            let scale = value(scales, at: group, dtype: dtype), bias = value(biases, at: group, dtype: dtype)
            for index in element..<end {
                let q = Float(code(codes, at: index, bits: bits))
                destination[offset] = rounded(rounded(q * scale, to: dtype) + bias, to: dtype)
                offset += 1
            }
            element = end
        }
    }

    /// Codes, scales and biases of `values` (fp32, whole groups) quantized as mx.quantize does:
    /// per group the fp32 scale (max − min)/(2^bits − 1), at least 1e-7, signed so that the edge
    /// of larger magnitude maps to code 0 exactly (the scale is then edge/q0 and the bias the
    /// edge; a group whose edge rounds to code 0 keeps bias 0), codes rint((w − bias)/scale)
    /// clamped, all from the unrounded fp32 scale; the scale and bias are stored rounded to `dtype`.
    static func quantize(_ values: UnsafeBufferPointer<Float>, dtype: DType, groupSize: Int, bits: Int)
        -> (codes: [UInt8], scales: [UInt8], biases: [UInt8]) {
        let levels = Float((1 << bits) - 1)
        let groups = values.count / groupSize
        var codes = [UInt8](repeating: 0, count: values.count * bits / 8)
        var scales = [Float](repeating: 0, count: groups), biases = [Float](repeating: 0, count: groups)
        for group in 0..<groups {
            let start = group * groupSize
            var low = Float.infinity, high = -Float.infinity
            for index in start..<(start + groupSize) {
                high = Swift.max(high, values[index])
                low = Swift.min(low, values[index])
            }
            let edgeIsLow = abs(low) > abs(high)
            var scale = Swift.max((high - low) / levels, 1e-7)
            scale = edgeIsLow ? scale : -scale
            let edge = edgeIsLow ? low : high
            let q0 = (edge / scale).rounded(.toNearestOrEven)
            var bias: Float = 0
            if q0 != 0 {
                scale = edge / q0
                bias = edge
            }
            for index in start..<(start + groupSize) {
                let q = Swift.min(Swift.max(((values[index] - bias) / scale).rounded(.toNearestOrEven), 0), levels)
                setCode(&codes, at: index, bits: bits, to: UInt32(q))
            }
            scales[group] = scale
            biases[group] = bias
        }
        return (codes, encoded(scales, as: dtype), encoded(biases, as: dtype))
    }

    static func code(_ codes: UnsafeRawBufferPointer, at element: Int, bits: Int) -> UInt32 {
        switch bits {
        case 4: return UInt32(codes[element >> 1] >> UInt8((element & 1) * 4)) & 0xF
        case 8: return UInt32(codes[element])
        default: break
        }
        let bit = element * bits
        var word: UInt32 = 0
        // At most two bytes hold a code of up to 8 bits.
        for byte in 0..<2 where bit / 8 + byte < codes.count {
            word |= UInt32(codes[bit / 8 + byte]) << (8 * byte)
        }
        return (word >> (bit % 8)) & ((1 << bits) - 1)
    }

    private static func setCode(_ codes: inout [UInt8], at element: Int, bits: Int, to value: UInt32) {
        let bit = element * bits
        let shifted = value << (bit % 8)
        codes[bit / 8] |= UInt8(truncatingIfNeeded: shifted)
        if shifted >> 8 != 0 { codes[bit / 8 + 1] |= UInt8(truncatingIfNeeded: shifted >> 8) }
    }

    private static func value(_ bytes: UnsafeRawBufferPointer, at index: Int, dtype: DType) -> Float {
        var result: Float = 0
        withUnsafeMutablePointer(to: &result) { pointer in
            let size = dtype.byteSize
            DTypeConversion.toFloat32(UnsafeRawBufferPointer(rebasing: bytes[(index * size)..<((index + 1) * size)]), dtype: dtype,
                                      into: UnsafeMutableBufferPointer(start: pointer, count: 1))
        }
        return result
    }

    /// `value` rounded to the nearest `dtype` value (ties to even), as an fp32.
    static func rounded(_ value: Float, to dtype: DType) -> Float {
        switch dtype {
        case .f16: return Float(Float16(value))
        case .bf16:
            guard !value.isNaN else { return value }
            let bits = value.bitPattern
            return Float(bitPattern: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) & 0xFFFF_0000)
        default: return value
        }
    }

    private static func encoded(_ values: [Float], as dtype: DType) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: values.count * dtype.byteSize)
        values.withUnsafeBufferPointer { source in bytes.withUnsafeMutableBytes { DTypeConversion.fromFloat32(source, to: dtype, into: $0) } }
        return bytes
    }
}
