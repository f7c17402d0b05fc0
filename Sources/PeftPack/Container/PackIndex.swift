/// The tensor index kept in the header: where every chunk of every tensor is and how it is coded.
public struct PackPlane: Equatable, Sendable {
    public var codec: PackFormat.Codec
    public var storedLength: Int
}

public struct PackChunk: Equatable, Sendable {
    public var offset: Int
    public var rawLength: Int
    public var storedLength: Int
    public var transform: PackFormat.Transform
    public var planes: [PackPlane]
    public var rawHash: UInt64
    public var storedHash: UInt64
}

public struct PackTensorEntry: Equatable, Sendable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    public var chunks: [PackChunk]

    public var info: TensorInfo { TensorInfo(name: name, dtype: dtype, shape: shape) }
    public var rawBytes: Int { chunks.reduce(0) { $0 + $1.rawLength } }
    public var storedBytes: Int { chunks.reduce(0) { $0 + $1.storedLength } }

    /// True when the tensor's bytes sit in the file as they are, in one contiguous extent.
    public var isStoredRaw: Bool {
        var expected = chunks.first?.offset ?? 0
        for chunk in chunks {
            guard chunk.transform == .none, chunk.planes.count == 1, chunk.planes[0].codec == .raw, chunk.offset == expected else { return false }
            expected += chunk.storedLength
        }
        return true
    }

    /// A short description of the codecs used, e.g. "planes(zstd,zstd,raw,raw)" or "raw".
    public var codecSummary: String {
        var kinds: [String] = []
        for chunk in chunks {
            let text = chunk.transform == .none ? chunk.planes[0].codec.rawValue
                : "planes(" + chunk.planes.map(\.codec.rawValue).joined(separator: ",") + ")"
            if !kinds.contains(text) { kinds.append(text) }
        }
        return kinds.isEmpty ? "empty" : kinds.joined(separator: "+")
    }
}

extension PackTensorEntry {
    func json() -> StrictJSON {
        .object([
            ("name", .string(name)),
            ("dtype", .string(dtype.rawValue)),
            ("shape", .array(shape.map { .integer(Int64($0)) })),
            ("chunks", .array(chunks.map { chunk in
                .object([
                    ("offset", .integer(Int64(chunk.offset))),
                    ("raw_length", .integer(Int64(chunk.rawLength))),
                    ("stored_length", .integer(Int64(chunk.storedLength))),
                    ("transform", .string(chunk.transform.rawValue)),
                    ("planes", .array(chunk.planes.map { .object([("codec", .string($0.codec.rawValue)), ("stored_length", .integer(Int64($0.storedLength)))]) })),
                    ("raw_xxh3", .string(XXH3.hex(chunk.rawHash))),
                    ("stored_xxh3", .string(XXH3.hex(chunk.storedHash))),
                ])
            })),
        ])
    }
}
