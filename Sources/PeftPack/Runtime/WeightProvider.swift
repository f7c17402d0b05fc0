/// A source of named checkpoint tensors (a safetensors file, a sharded set, a pack's base section).
/// The runtime checks each tensor's identity at load and reads its values only during a forward
/// pass, a range of elements at a time, so a model is never held widened in memory.
public protocol WeightProvider {
    /// Every tensor name the source holds, so loading can report the ones the model does not use.
    var names: [String] { get }
    /// The tensor with this exact name, or nil when the source has none.
    func tensor(_ name: String) throws -> HostTensor?
    /// Name, dtype and shape of a tensor without reading its values; nil when the source has none.
    func tensorInfo(_ name: String) throws -> TensorInfo?
    /// Widens elements `range` (row-major) of a floating-point tensor into `destination`, which
    /// holds `range.count` values. A mapped source drops the pages it read once they are widened.
    func widen(_ name: String, elements range: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) throws
}

extension WeightProvider {
    /// Reads the whole tensor: right for sources whose tensors are computed or already in memory.
    public func tensorInfo(_ name: String) throws -> TensorInfo? {
        try tensor(name).map { TensorInfo(name: name, dtype: $0.dtype, shape: $0.shape) }
    }

    public func widen(_ name: String, elements range: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) throws {
        guard let tensor = try tensor(name) else { throw RuntimeError.missingWeight(name: name, expectedShape: []) }
        tensor.widen(elements: range, into: destination)
    }
}

extension HostTensor {
    /// Widens elements `range` of a floating-point tensor into `destination` (exact for 16-bit
    /// floats and fp32).
    func widen(elements range: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) {
        let size = dtype.byteSize
        bytes.withUnsafeBytes { raw in
            let slice = UnsafeRawBufferPointer(rebasing: raw[(range.lowerBound * size)..<(range.upperBound * size)])
            DTypeConversion.toFloat32(slice, dtype: dtype, into: destination)
        }
    }
}

extension Checkpoint: WeightProvider {
    public func tensor(_ name: String) throws -> HostTensor? {
        info(name) == nil ? nil : try tensor(name) as HostTensor
    }

    public func tensorInfo(_ name: String) throws -> TensorInfo? { info(name) }

    /// Straight from the map; the pages read are dropped afterwards, so widening a model tensor by
    /// tensor keeps one tensor's bytes resident, not the checkpoint.
    public func widen(_ name: String, elements range: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) throws {
        if isQuantized(name), let decoded { return try decoded.widen(name, elements: range, into: destination) }
        guard let info = info(name) else { throw InputError(file: folder, tensor: name, problem: "no such tensor") }
        let size = info.dtype.byteSize
        let bytes = (range.lowerBound * size)..<(range.upperBound * size)
        try withBytes(name) { raw in
            DTypeConversion.toFloat32(UnsafeRawBufferPointer(rebasing: raw[bytes]), dtype: info.dtype, into: destination)
        }
        releasePages(name, bytes: bytes)
    }
}
