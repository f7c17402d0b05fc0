/// NaN and ±Inf in the tensors peftpack reads and writes. A non-finite weight poisons every
/// output it reaches (one NaN in a LoRA factor makes whole rows of ΔW NaN), so peftpack refuses to
/// take or write one silently: import reports and refuses them, merge, stack and extract never
/// write one the base did not already hold.
public struct NonFiniteCount: Encodable, Equatable, Sendable {
    public var nan = 0
    public var infinite = 0

    public init(nan: Int = 0, infinite: Int = 0) {
        self.nan = nan
        self.infinite = infinite
    }

    public var total: Int { nan + infinite }

    /// "3 NaN", "1 NaN and 2 ±Inf".
    public var phrase: String {
        [nan > 0 ? "\(nan) NaN" : nil, infinite > 0 ? "\(infinite) ±Inf" : nil].compactMap { $0 }.joined(separator: " and ")
    }
}

/// A tensor that holds NaN or ±Inf, found on import (kept only when the user allows it).
public struct NonFiniteTensor: Encodable, Sendable {
    public var file: String
    public var tensor: String
    public var elements: Int
    public var nan: Int
    public var infinite: Int
}

/// Non-finite values where peftpack takes or makes a number. `exitCode` 2: it is the input's fault.
public struct NonFiniteError: UserFacingError {
    public enum Kind: Sendable, Equatable {
        /// A tensor of an input adapter holds NaN/Inf.
        case inputTensor
        /// A weight the user gave is NaN/Inf.
        case weight
        /// A result (merged weight, stacked or extracted factor) would hold NaN/Inf that its
        /// inputs' base did not.
        case result
    }

    public var kind: Kind
    public var description: String
}

public enum FiniteValues {
    /// NaN and infinity counts of a float tensor, from its bit patterns (integer tensors: none).
    public static func count(_ bytes: UnsafeRawBufferPointer, dtype: DType) -> NonFiniteCount {
        var count = NonFiniteCount()
        func scan<Bits: FixedWidthInteger & UnsignedInteger>(_: Bits.Type, exponent: Bits) {
            let elements = bytes.count / MemoryLayout<Bits>.size
            for index in 0..<elements {
                let bits = bytes.loadUnaligned(fromByteOffset: index * MemoryLayout<Bits>.size, as: Bits.self)
                guard bits & exponent == exponent else { continue }
                if bits & ~exponent & ~(Bits(1) << (Bits.bitWidth - 1)) != 0 { count.nan += 1 } else { count.infinite += 1 }
            }
        }
        switch dtype {
        case .f64: scan(UInt64.self, exponent: 0x7FF0_0000_0000_0000)
        case .f32: scan(UInt32.self, exponent: 0x7F80_0000)
        case .f16: scan(UInt16.self, exponent: 0x7C00)
        case .bf16: scan(UInt16.self, exponent: 0x7F80)
        default: break
        }
        return count
    }

    public static func count(_ tensor: HostTensor) -> NonFiniteCount {
        tensor.bytes.withUnsafeBytes { count($0, dtype: tensor.dtype) }
    }

    /// Elements of `result` that are NaN or ±Inf where the base's element (same position) is
    /// finite: what an operation made non-finite, counting rounding overflow to the output dtype.
    static func newlyNonFinite(_ result: HostTensor, base: [Double]) -> NonFiniteCount {
        guard FiniteValues.count(result).total > 0 else { return NonFiniteCount() }
        var count = NonFiniteCount()
        for (value, original) in zip(result.floats(), base) where !value.isFinite && original.isFinite {
            if value.isNaN { count.nan += 1 } else { count.infinite += 1 }
        }
        return count
    }

    /// Refuses a weight (a merge or stack coefficient) that is not a finite number.
    public static func checkWeight(_ weight: Double, of pack: String) throws {
        guard weight.isFinite else {
            throw NonFiniteError(kind: .weight, description: "\(pack): weight \(weight) is not a finite number")
        }
    }

    /// The input tensor's non-finite elements, or nil when it has none.
    static func survey(_ tensor: HostTensor, name: String, file: String) -> NonFiniteTensor? {
        let found = count(tensor)
        guard found.total > 0 else { return nil }
        return NonFiniteTensor(file: file, tensor: name, elements: tensor.elementCount, nan: found.nan, infinite: found.infinite)
    }

    /// Refuses a merged tensor with NaN/Inf the base did not have: from a non-finite adapter
    /// value or weight, or W + ΔW beyond the output dtype's range. Thrown inside the atomic
    /// output, so nothing is written.
    static func checkMerged(_ output: TensorInfo, madeNonFinite count: Int) throws {
        guard count > 0 else { return }
        throw NonFiniteError(kind: .result, description: "merged tensor \(output.name) would hold \(count) NaN or ±Inf elements in \(output.dtype.rawValue) where the base is finite (an adapter value is NaN/Inf, or W + ΔW overflows \(output.dtype.rawValue)); nothing was written")
    }

    /// Refuses writing a result tensor that holds NaN/Inf.
    static func checkResult(_ bytes: UnsafeRawBufferPointer, dtype: DType, name: String, what: String) throws {
        let found = count(bytes, dtype: dtype)
        guard found.total > 0 else { return }
        throw NonFiniteError(kind: .result, description: "\(name): \(what) holds \(found.phrase) of its \(bytes.count / dtype.byteSize) elements; nothing was written")
    }
}
