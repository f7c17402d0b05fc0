/// Writes a GGUF model file tensor by tensor, each tensor's bytes streamed as they are made and
/// never held together. The header's size does not depend on the tensors' types or offsets (both
/// fixed-width fields), so its room is reserved first and the header written into it last, once
/// every tensor's type and size is known: a merge decides a tensor's type (a promotion) only after
/// quantizing it.
final class GGUFModelWriter {
    private let writer: AtomicFileWriter
    private let metadata: [[UInt8]]
    private let tensors: [(name: String, shape: [Int])]
    private let alignment: Int
    private var written: [(type: GGUF.ElementType, byteCount: Int)] = []
    private let dataStart: Int
    private let zeros: [UInt8]

    /// `metadata`: whole key/value entries (key, type, value) as a GGUF file stores them, in order.
    /// `tensors`: row-major shapes (outermost first), in the order their data will follow.
    init(writer: AtomicFileWriter, metadata: [[UInt8]], tensors: [(name: String, shape: [Int])], alignment: Int) throws {
        precondition(alignment > 0 && alignment.nonzeroBitCount == 1)
        self.writer = writer
        self.metadata = metadata
        self.tensors = tensors
        self.alignment = alignment
        zeros = [UInt8](repeating: 0, count: alignment)
        dataStart = Self.padded(Self.header(metadata, tensors.map { ($0.name, $0.shape, GGUF.ElementType.f32, 0) }).count, alignment)
        try writer.write([UInt8](repeating: 0, count: dataStart))
    }

    /// The next tensor's data, as `type`: `body` hands its bytes to the sink, in one or more calls.
    func append(_ type: GGUF.ElementType, _ body: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws {
        let tensor = tensors[written.count]
        guard let expected = type.byteCount(shape: tensor.shape) else {
            preconditionFailure("\(tensor.name): \(Shape.describe(tensor.shape)) is not whole \(type.ggmlName) blocks")
        }
        var count = 0
        try body { bytes in
            count += bytes.count
            precondition(count <= expected, "\(tensor.name): more bytes than \(type.ggmlName) of its shape takes")
            try writer.write(bytes)
        }
        precondition(count == expected, "\(tensor.name): \(count) bytes written of \(expected)")
        try zeros.withUnsafeBytes { try writer.write(UnsafeRawBufferPointer(rebasing: $0[0..<(Self.padded(count, alignment) - count)])) }
        written.append((type, count))
    }

    /// Writes the header over its reserved room, once every tensor is in.
    func finish() throws {
        precondition(written.count == tensors.count, "\(tensors.count - written.count) tensors not written")
        var offset = 0
        var described: [(String, [Int], GGUF.ElementType, Int)] = []
        for (tensor, data) in zip(tensors, written) {
            described.append((tensor.name, tensor.shape, data.type, offset))
            offset += Self.padded(data.byteCount, alignment)
        }
        let header = Self.header(metadata, described)
        precondition(Self.padded(header.count, alignment) == dataStart)
        try writer.write(header, at: 0)
    }

    private static func header(_ metadata: [[UInt8]], _ tensors: [(name: String, shape: [Int], type: GGUF.ElementType, offset: Int)]) -> [UInt8] {
        var header: [UInt8] = GGUF.magic
        GGUF.append(&header, GGUF.version)
        GGUF.append(&header, UInt64(tensors.count))
        GGUF.append(&header, UInt64(metadata.count))
        for entry in metadata { header += entry }
        for tensor in tensors {
            GGUF.appendString(&header, tensor.name)
            GGUF.append(&header, UInt32(tensor.shape.count))
            for dimension in tensor.shape.reversed() { GGUF.append(&header, UInt64(dimension)) }
            GGUF.append(&header, tensor.type.rawValue)
            GGUF.append(&header, UInt64(tensor.offset))
        }
        return header
    }

    static func padded(_ count: Int, _ alignment: Int) -> Int { (count + alignment - 1) / alignment * alignment }
}
