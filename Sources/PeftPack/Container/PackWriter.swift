import Foundation

/// Writes a .peftpack file in one pass: a placeholder preamble, each tensor's chunks as they are
/// appended (64-byte aligned), then the header with the tensor index; the preamble that locates
/// the header is filled in last and the file is committed atomically. Memory stays bounded by a
/// batch of chunks, not the tensor or the file. Output is deterministic: chunks are encoded in
/// parallel but written in order, and every choice depends only on the data.
public final class PackWriter {
    public struct Options: Sendable {
        /// 1–22. Up to 9 the writer tries fast candidates (literals-only Huffman on exponent planes,
        /// zstd -1); from 10 it also tries zstd at this level.
        public var level: Int32
        public var chunkSize: Int
        public var threads: Int

        public init(level: Int32 = 3, chunkSize: Int = PackFormat.defaultChunkSize,
                    threads: Int = Cores.active) {
            self.level = level
            self.chunkSize = chunkSize
            self.threads = max(1, threads)
        }
    }

    public let options: Options
    private let output: AtomicFileWriter
    private var entries: [PackTensorEntry] = []
    private var names = Set<String>()
    private var position = PackFormat.preambleSize
    /// Encoded batches are written on this queue while the next batch is encoded; at most one
    /// batch waits, so memory stays bounded by two batches.
    private let writeQueue = DispatchQueue(label: "peftpack.pack-writer")
    private let writes = DispatchGroup()
    private var writeError: Error?

    public init(destination: String, options: Options = Options()) throws {
        precondition(options.chunkSize > 0 && options.chunkSize <= PackFormat.maximumChunkSize && options.chunkSize % 8 == 0)
        self.options = options
        output = try AtomicFileWriter(destination: destination)
        try output.write([UInt8](repeating: 0, count: PackFormat.preambleSize))
    }

    public var destination: String { output.destination }

    public func append(_ tensor: HostTensor, name: String) throws {
        try tensor.bytes.withUnsafeBytes { try append(name: name, dtype: tensor.dtype, shape: tensor.shape, bytes: $0) }
    }

    public func append(name: String, dtype: DType, shape: [Int], bytes: UnsafeRawBufferPointer) throws {
        guard names.insert(name).inserted else {
            throw InputError(file: destination, problem: "tensor \(name) is written twice")
        }
        let info = TensorInfo(name: name, dtype: dtype, shape: shape)
        guard info.byteCount == bytes.count else {
            throw InputError(file: destination, problem: "tensor \(name): \(bytes.count) bytes do not match \(Shape.describe(shape)) × \(dtype.rawValue)")
        }
        let chunkSize = options.chunkSize / dtype.byteSize * dtype.byteSize
        let chunkCount = (bytes.count + chunkSize - 1) / chunkSize
        var chunks: [PackChunk] = []
        let batch = max(1, options.threads * 4)
        var first = 0
        while first < chunkCount {
            let count = min(batch, chunkCount - first)
            var encoded = [Result<EncodedChunk, Error>?](repeating: nil, count: count)
            encoded.withUnsafeMutableBufferPointer { slots in
                let work = { (index: Int) in
                    let start = (first + index) * chunkSize
                    let slice = UnsafeRawBufferPointer(rebasing: bytes[start..<min(start + chunkSize, bytes.count)])
                    slots[index] = Result { try ChunkCodec.encode(slice, dtype: dtype, level: self.options.level) }
                }
                if options.threads > 1 && count > 1 {
                    DispatchQueue.concurrentPerform(iterations: count, execute: work)
                } else {
                    (0..<count).forEach(work)
                }
            }
            var pieces: [[UInt8]] = []
            for (index, result) in encoded.enumerated() {
                let chunk = try result!.get()
                pieces.append(padding())
                let rawLength = min(chunkSize, bytes.count - (first + index) * chunkSize)
                chunks.append(PackChunk(offset: position, rawLength: rawLength, storedLength: chunk.storedLength,
                                        transform: chunk.transform,
                                        planes: chunk.planes.map { PackPlane(codec: $0.codec, storedLength: $0.bytes.count) },
                                        rawHash: chunk.rawHash, storedHash: chunk.storedHash))
                pieces += chunk.planes.map(\.bytes)
                position += chunk.storedLength
            }
            try enqueue(pieces)
            first += count
        }
        entries.append(PackTensorEntry(name: name, dtype: dtype, shape: shape, chunks: chunks))
    }

    /// Zero bytes that bring `position` to the next multiple of the alignment (and advances it).
    private func padding() -> [UInt8] {
        let count = (PackFormat.alignment - position % PackFormat.alignment) % PackFormat.alignment
        position += count
        return [UInt8](repeating: 0, count: count)
    }

    private func enqueue(_ pieces: [[UInt8]]) throws {
        try drain()
        writes.enter()
        writeQueue.async {
            defer { self.writes.leave() }
            do {
                for piece in pieces where !piece.isEmpty { try self.output.write(piece) }
            } catch {
                self.writeError = error
            }
        }
    }

    /// Waits for the queued write and surfaces its error.
    private func drain() throws {
        writes.wait()
        if let error = writeError { throw error }
    }

    /// Writes the header and preamble and moves the file into place.
    public func finish(document: StrictJSON) throws {
        try enqueue([padding()])
        try drain()
        let header = StrictJSON.object([
            ("document", document),
            ("tensors", .array(entries.map { $0.json() })),
        ]).canonicalBytes()
        guard header.count <= PackFormat.maximumRawHeader else {
            throw InputError(file: destination, problem: "header of \(header.count) bytes exceeds the format's limit")
        }
        let stored = try header.withUnsafeBytes { try Zstd.compress($0, level: 9) }
        let headerOffset = position
        try output.write(stored)
        var preamble = LittleEndianWriter()
        preamble.bytes = PackFormat.magic
        preamble.append(PackFormat.majorVersion)
        preamble.append(PackFormat.minorVersion)
        preamble.append(UInt32(0))
        preamble.append(UInt64(headerOffset))
        preamble.append(UInt64(stored.count))
        preamble.append(UInt64(header.count))
        preamble.append(XXH3.hash64(stored))
        preamble.append(UInt64(0))
        preamble.append(XXH3.hash64(preamble.bytes))
        try output.write(preamble.bytes, at: 0)
        try output.commit()
    }

    public func abandon() {
        writes.wait()
        output.abandon()
    }
}

extension PackWriter {
    /// A whole pack from tensors in memory and its adapter document, atomically: nothing is left
    /// at `destination` if any step fails.
    public static func write(_ tensors: [(name: String, tensor: HostTensor)], document: PackDocument, to destination: String,
                             options: Options = Options()) throws {
        let writer = try PackWriter(destination: destination, options: options)
        do {
            for (name, tensor) in tensors { try writer.append(tensor, name: name) }
            try writer.finish(document: try StrictJSON.encoding(document))
        } catch {
            writer.abandon()
            throw error
        }
    }
}
