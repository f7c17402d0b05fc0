/// Splits floating-point data into byte planes so the entropy coder sees each kind of bit alone:
/// the exponent (a few distinct values, highly skewed, cheap to Huffman-code) in one plane, the
/// sign with the top mantissa bits in another, the remaining (near-random) mantissa bytes in the
/// rest. Exact bit formulas are in spec/FORMAT.md, "Transforms".
public enum BytePlanes {
    /// Number of planes the transform makes for a dtype, or nil when the dtype is stored as is.
    public static func planeCount(_ dtype: DType) -> Int? {
        switch dtype {
        case .bf16, .f16: 2
        case .f32: 4
        default: nil
        }
    }

    /// `planes` must hold planeCount × elementCount bytes; plane k occupies bytes [k·n, (k+1)·n).
    public static func split(_ dtype: DType, raw: UnsafeRawBufferPointer, planes: UnsafeMutableRawBufferPointer) {
        let out = planes.bindMemory(to: UInt8.self)
        switch dtype {
        case .bf16:
            let n = raw.count / 2
            for i in 0..<n {
                let x = raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)
                out[i] = UInt8(truncatingIfNeeded: x >> 7)
                out[n + i] = UInt8(truncatingIfNeeded: ((x >> 8) & 0x80) | (x & 0x7F))
            }
        case .f16:
            let n = raw.count / 2
            for i in 0..<n {
                let x = raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)
                out[i] = UInt8(truncatingIfNeeded: x >> 8)
                out[n + i] = UInt8(truncatingIfNeeded: x)
            }
        case .f32:
            let n = raw.count / 4
            for i in 0..<n {
                let x = raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)
                out[i] = UInt8(truncatingIfNeeded: x >> 23)
                out[n + i] = UInt8(truncatingIfNeeded: ((x >> 24) & 0x80) | ((x >> 16) & 0x7F))
                out[2 * n + i] = UInt8(truncatingIfNeeded: x >> 8)
                out[3 * n + i] = UInt8(truncatingIfNeeded: x)
            }
        default:
            preconditionFailure("no byte-plane transform for \(dtype)")
        }
    }

    /// The inverse of `split`.
    public static func merge(_ dtype: DType, planes: UnsafeRawBufferPointer, raw: UnsafeMutableRawBufferPointer) {
        let p = planes.bindMemory(to: UInt8.self)
        switch dtype {
        case .bf16:
            let n = raw.count / 2
            let out = raw.bindMemory(to: UInt16.self)
            for i in 0..<n {
                let exponent = UInt16(p[i]), low = UInt16(p[n + i])
                out[i] = ((low & 0x80) << 8) | (exponent << 7) | (low & 0x7F)
            }
        case .f16:
            let n = raw.count / 2
            let out = raw.bindMemory(to: UInt16.self)
            for i in 0..<n {
                out[i] = UInt16(p[i]) << 8 | UInt16(p[n + i])
            }
        case .f32:
            let n = raw.count / 4
            let out = raw.bindMemory(to: UInt32.self)
            for i in 0..<n {
                let exponent = UInt32(p[i]), high = UInt32(p[n + i])
                out[i] = ((high & 0x80) << 24) | (exponent << 23) | ((high & 0x7F) << 16) | (UInt32(p[2 * n + i]) << 8) | UInt32(p[3 * n + i])
            }
        default:
            preconditionFailure("no byte-plane transform for \(dtype)")
        }
    }
}
