/// A tensor's identity without its data.
public struct TensorInfo: Hashable, Sendable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]

    public init(name: String, dtype: DType, shape: [Int]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
    }

    /// Element count, or nil when the shape's product overflows `Int`.
    public var elementCount: Int? { Shape.elementCount(shape) }

    /// Byte size, or nil when it overflows `Int`.
    public var byteCount: Int? {
        guard let count = elementCount else { return nil }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
        return overflow ? nil : bytes
    }
}

public enum Shape {
    /// Product of the dimensions with overflow and negativity checked; nil when either occurs.
    public static func elementCount(_ shape: [Int]) -> Int? {
        var count = 1
        for dim in shape {
            guard dim >= 0 else { return nil }
            let (product, overflow) = count.multipliedReportingOverflow(by: dim)
            if overflow { return nil }
            count = product
        }
        return count
    }

    public static func describe(_ shape: [Int]) -> String {
        "[" + shape.map(String.init).joined(separator: ", ") + "]"
    }
}

/// A tensor whose bytes live in memory (little-endian, row-major), as read from or written to a file.
public struct HostTensor: Sendable {
    public var dtype: DType
    public var shape: [Int]
    public var bytes: [UInt8]

    public init(dtype: DType, shape: [Int], bytes: [UInt8]) {
        precondition(Shape.elementCount(shape).map { $0 * dtype.byteSize } == bytes.count,
                     "tensor bytes do not match shape \(shape) × \(dtype)")
        self.dtype = dtype
        self.shape = shape
        self.bytes = bytes
    }

    public var elementCount: Int { bytes.count / dtype.byteSize }
}
