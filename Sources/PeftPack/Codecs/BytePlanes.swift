import CDTypeKernels

/// Splits floating-point data into byte planes so the entropy coder sees each kind of bit alone:
/// the exponent (a few distinct values, highly skewed, cheap to Huffman-code) in one plane, the
/// sign with the top mantissa bits in another, the remaining (near-random) mantissa bytes in the
/// rest. Exact bit formulas are in spec/FORMAT.md §4; the loops are C kernels.
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
        precondition(planes.count == raw.count)
        guard let source = raw.baseAddress, let output = planes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
        switch dtype {
        case .bf16: peftpack_split_bf16(source.assumingMemoryBound(to: UInt16.self), output, raw.count / 2)
        case .f16: peftpack_split_f16(source.assumingMemoryBound(to: UInt16.self), output, raw.count / 2)
        case .f32: peftpack_split_f32(source.assumingMemoryBound(to: UInt32.self), output, raw.count / 4)
        default: preconditionFailure("no byte-plane transform for \(dtype)")
        }
    }

    /// The inverse of `split`.
    public static func merge(_ dtype: DType, planes: UnsafeRawBufferPointer, raw: UnsafeMutableRawBufferPointer) {
        precondition(planes.count == raw.count)
        guard let source = planes.baseAddress?.assumingMemoryBound(to: UInt8.self), let output = raw.baseAddress else { return }
        switch dtype {
        case .bf16: peftpack_merge_bf16(source, output.assumingMemoryBound(to: UInt16.self), raw.count / 2)
        case .f16: peftpack_merge_f16(source, output.assumingMemoryBound(to: UInt16.self), raw.count / 2)
        case .f32: peftpack_merge_f32(source, output.assumingMemoryBound(to: UInt32.self), raw.count / 4)
        default: preconditionFailure("no byte-plane transform for \(dtype)")
        }
    }
}
