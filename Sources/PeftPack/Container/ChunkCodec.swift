import Foundation

/// Encodes and decodes one chunk: the unit of independent decoding and of checksumming.
struct EncodedChunk {
    var transform: PackFormat.Transform
    var planes: [(codec: PackFormat.Codec, bytes: [UInt8])]
    var rawHash: UInt64
    var storedHash: UInt64

    var storedLength: Int { planes.reduce(0) { $0 + $1.bytes.count } }
}

enum ChunkCodec {
    /// Encodes a chunk, choosing per plane the smallest of the candidate encodings, and raw
    /// unless compression saves more than `PackFormat.minimumSaving`. A chunk whose planes all
    /// stay raw is stored untransformed, so uncompressed tensors can be memory-mapped.
    static func encode(_ raw: UnsafeRawBufferPointer, dtype: DType, level: Int32) throws -> EncodedChunk {
        let rawHash = XXH3.hash64(raw)
        var planes: [(codec: PackFormat.Codec, bytes: [UInt8])] = []
        var transform = PackFormat.Transform.none
        if let count = BytePlanes.planeCount(dtype) {
            let split = [UInt8](unsafeUninitializedCapacity: raw.count) { buffer, initialized in
                BytePlanes.split(dtype, raw: raw, planes: UnsafeMutableRawBufferPointer(buffer))
                initialized = raw.count
            }
            let planeLength = raw.count / count
            for plane in 0..<count {
                let encoded = try split.withUnsafeBytes { all in
                    try bestEncoding(UnsafeRawBufferPointer(rebasing: all[(plane * planeLength)..<((plane + 1) * planeLength)]),
                                     level: level, floatPlane: true)
                }
                planes.append(encoded)
            }
            if planes.contains(where: { $0.codec != .raw }) {
                transform = .planes
            } else {
                planes = [(.raw, [UInt8](raw))]
            }
        } else {
            planes = [try bestEncoding(raw, level: level, floatPlane: false)]
        }
        return EncodedChunk(transform: transform, planes: planes, rawHash: rawHash,
                            storedHash: XXH3.hash64(concatenating: planes.map(\.bytes)))
    }

    /// Bytes of a plane tried first; when even they do not compress, the plane is stored raw
    /// without compressing the rest (mantissa planes are close to random).
    static let probeLength = 64 << 10

    /// Candidates by level: float planes get literals-only Huffman frames (what their skewed,
    /// match-free bytes want); from level 5 also zstd -1, from level 10 also zstd at the level.
    /// Other data gets zstd at the level.
    static func bestEncoding(_ data: UnsafeRawBufferPointer, level: Int32, floatPlane: Bool) throws -> (codec: PackFormat.Codec, bytes: [UInt8]) {
        let limit = Double(data.count) * (1 - PackFormat.minimumSaving)
        guard data.count > 0 else { return (.raw, []) }
        if floatPlane && data.count > 2 * probeLength {
            let probe = UnsafeRawBufferPointer(rebasing: data[0..<probeLength])
            if Double(try Zstd.compressLiteralsOnly(probe).count) >= Double(probeLength) * (1 - PackFormat.minimumSaving) {
                return (.raw, [UInt8](data))
            }
        }
        var best: [UInt8]? = nil
        func consider(_ candidate: [UInt8]) {
            if candidate.count < (best?.count ?? Int.max) { best = candidate }
        }
        if floatPlane {
            consider(try Zstd.compressLiteralsOnly(data))
            if level >= 5 { consider(try Zstd.compress(data, level: 1)) }
            if level >= 10 { consider(try Zstd.compress(data, level: level)) }
        } else {
            consider(try Zstd.compress(data, level: level))
        }
        if let best, Double(best.count) < limit {
            return (.zstd, best)
        }
        return (.raw, [UInt8](data))
    }

    /// Decodes a chunk's stored bytes into `raw` (exactly the chunk's raw length).
    static func decode(stored: UnsafeRawBufferPointer, chunk: PackChunk, dtype: DType,
                       raw: UnsafeMutableRawBufferPointer) throws {
        switch chunk.transform {
        case .none:
            try decodePlane(UnsafeRawBufferPointer(rebasing: stored[0..<chunk.planes[0].storedLength]),
                            codec: chunk.planes[0].codec, into: raw)
        case .planes:
            let count = chunk.planes.count
            let planeLength = raw.count / count
            var split = [UInt8](repeating: 0, count: raw.count)
            try split.withUnsafeMutableBytes { all in
                var offset = 0
                for (index, plane) in chunk.planes.enumerated() {
                    let output = UnsafeMutableRawBufferPointer(rebasing: all[(index * planeLength)..<((index + 1) * planeLength)])
                    try decodePlane(UnsafeRawBufferPointer(rebasing: stored[offset..<(offset + plane.storedLength)]), codec: plane.codec, into: output)
                    offset += plane.storedLength
                }
            }
            split.withUnsafeBytes { BytePlanes.merge(dtype, planes: $0, raw: raw) }
        }
    }

    static func decodePlane(_ stored: UnsafeRawBufferPointer, codec: PackFormat.Codec, into output: UnsafeMutableRawBufferPointer) throws {
        switch codec {
        case .raw:
            guard stored.count == output.count else { throw ZstdError.corrupt("raw plane is \(stored.count) bytes, expected \(output.count)") }
            if let base = stored.baseAddress, stored.count > 0 { output.baseAddress!.copyMemory(from: base, byteCount: stored.count) }
        case .zstd:
            try Zstd.decompress(stored, into: output)
        }
    }
}
