import CDTypeKernels
import Foundation

/// Conversions between stored float dtypes and the fp32 that all arithmetic uses. Widening is
/// exact; narrowing rounds once to nearest, ties to even. Large buffers are split across cores.
public enum DTypeConversion {
    /// Elements below which one thread converts the whole buffer (splitting costs more).
    static let parallelThreshold = 1 << 20

    static func parallel(_ count: Int, _ body: (Range<Int>) -> Void) {
        let workers = Cores.active
        guard count >= parallelThreshold, workers > 1 else {
            body(0..<count)
            return
        }
        let blocks = workers * 4
        let blockSize = (count + blocks - 1) / blocks
        DispatchQueue.concurrentPerform(iterations: blocks) { block in
            let start = block * blockSize
            if start < count { body(start..<min(start + blockSize, count)) }
        }
    }

    /// Widens `source` (raw little-endian elements of a float dtype) into `destination`.
    public static func toFloat32(_ source: UnsafeRawBufferPointer, dtype: DType, into destination: UnsafeMutableBufferPointer<Float>) {
        let count = destination.count
        precondition(source.count == count * dtype.byteSize, "conversion buffer sizes disagree")
        guard count > 0, let input = source.baseAddress, let output = destination.baseAddress else { return }
        parallel(count) { range in
            let n = range.count
            switch dtype {
            case .f32: (output + range.lowerBound).update(from: input.assumingMemoryBound(to: Float.self) + range.lowerBound, count: n)
            case .bf16: peftpack_bf16_to_f32(input.assumingMemoryBound(to: UInt16.self) + range.lowerBound, output + range.lowerBound, n)
            case .f16: peftpack_f16_to_f32(input.assumingMemoryBound(to: UInt16.self) + range.lowerBound, output + range.lowerBound, n)
            case .f64: peftpack_f64_to_f32(input.assumingMemoryBound(to: Double.self) + range.lowerBound, output + range.lowerBound, n)
            default: preconditionFailure("\(dtype) is not a floating-point dtype")
            }
        }
    }

    /// Narrows (or copies) fp32 values into raw little-endian elements of `dtype`.
    public static func fromFloat32(_ source: UnsafeBufferPointer<Float>, to dtype: DType, into destination: UnsafeMutableRawBufferPointer) {
        let count = source.count
        precondition(destination.count == count * dtype.byteSize, "conversion buffer sizes disagree")
        guard count > 0, let input = source.baseAddress, let output = destination.baseAddress else { return }
        parallel(count) { range in
            let n = range.count
            let from = input + range.lowerBound
            switch dtype {
            case .f32: (output.assumingMemoryBound(to: Float.self) + range.lowerBound).update(from: from, count: n)
            case .bf16: peftpack_f32_to_bf16(from, output.assumingMemoryBound(to: UInt16.self) + range.lowerBound, n)
            case .f16: peftpack_f32_to_f16(from, output.assumingMemoryBound(to: UInt16.self) + range.lowerBound, n)
            case .f64: peftpack_f32_to_f64(from, output.assumingMemoryBound(to: Double.self) + range.lowerBound, n)
            default: preconditionFailure("\(dtype) is not a floating-point dtype")
            }
        }
    }
}

extension HostTensor {
    /// The values as fp32 (exact for F16/BF16/F32; F64 rounds to nearest). Only for float dtypes.
    public func floats() -> [Float] {
        precondition(dtype.isFloatingPoint, "floats() of a \(dtype) tensor")
        // toFloat32 writes every element, so the array need not be zeroed first.
        return [Float](unsafeUninitializedCapacity: elementCount) { values, initialized in
            bytes.withUnsafeBytes { DTypeConversion.toFloat32($0, dtype: dtype, into: values) }
            initialized = elementCount
        }
    }

    /// A tensor of `dtype` holding `floats` rounded once (round to nearest, ties to even).
    public init(floats: [Float], shape: [Int], dtype: DType) {
        precondition(dtype.isFloatingPoint && Shape.elementCount(shape) == floats.count)
        var bytes = [UInt8](repeating: 0, count: floats.count * dtype.byteSize)
        floats.withUnsafeBufferPointer { source in
            bytes.withUnsafeMutableBytes { DTypeConversion.fromFloat32(source, to: dtype, into: $0) }
        }
        self.init(dtype: dtype, shape: shape, bytes: bytes)
    }
}

extension HostTensor {
    /// A tensor of `dtype` holding `values` correctly rounded (nearest, ties to even) straight from
    /// fp64. For 16-bit outputs the fp64 → fp32 step rounds to odd, which makes the following
    /// fp32 → 16-bit round-to-nearest-even equal to a single rounding of the fp64 value.
    public init(correctlyRounding values: [Double], shape: [Int], dtype: DType) {
        switch dtype {
        case .f64:
            self.init(dtype: .f64, shape: shape, bytes: values.withUnsafeBytes { Array($0) })
        case .f32:
            self.init(floats: values.map { Float($0) }, shape: shape, dtype: .f32)
        default:
            self.init(floats: values.map(Self.roundToOdd), shape: shape, dtype: dtype)
        }
    }

    static func roundToOdd(_ value: Double) -> Float {
        let nearest = Float(value)
        guard nearest.isFinite, Double(nearest) != value, nearest.bitPattern & 1 == 0 else { return nearest }
        return Double(nearest) > value ? nearest.nextDown : nearest.nextUp
    }
}
