// TEMPORARY until the reference quantizers land (branch gguf-quantize): floats and q8_0 only.
extension GGUF.ElementType {
    func quantize(_ values: UnsafeBufferPointer<Float>, into destination: UnsafeMutableRawBufferPointer) {
        let bytes = GGUF.encode(Array(values), as: self)
        precondition(bytes.count == destination.count)
        bytes.withUnsafeBytes { destination.copyMemory(from: $0) }
    }
}

extension GGUF.ElementType {
    static let writable: [GGUF.ElementType] = [.f32, .f16, .bf16, .q8_0]
}
