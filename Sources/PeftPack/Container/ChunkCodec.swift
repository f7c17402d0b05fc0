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
            var split = [UInt8](repeating: 0, count: raw.count)
            split.withUnsafeMutableBytes { BytePlanes.split(dtype, raw: raw, planes: $0) }
            let planeLength = raw.count / count
            for plane in 0..<count {
                let encoded = try split.withUnsafeBytes { all in
                    try bestEncoding(UnsafeRawBufferPointer(rebasing: all[(plane * planeLength)..<((plane + 1) * planeLength)]),
                                     level: level, tryLiterals: plane == 0)
                }
                planes.append(encoded)
            }
            if planes.contains(where: { $0.codec != .raw }) {
                transform = .planes
            } else {
                planes = [(.raw, [UInt8](raw))]
            }
        } else {
            planes = [try bestEncoding(raw, level: level, tryLiterals: false)]
        }
        var stored = [UInt8]()
        stored.reserveCapacity(planes.reduce(0) { $0 + $1.bytes.count })
        for plane in planes { stored += plane.bytes }
        return EncodedChunk(transform: transform, planes: planes, rawHash: rawHash, storedHash: XXH3.hash64(stored))
    }

    static func bestEncoding(_ data: UnsafeRawBufferPointer, level: Int32, tryLiterals: Bool) throws -> (codec: PackFormat.Codec, bytes: [UInt8]) {
        var best: [UInt8]? = nil
        func consider(_ candidate: [UInt8]) {
            if candidate.count < (best?.count ?? Int.max) { best = candidate }
        }
        if data.count > 0 {
            if tryLiterals { consider(try Zstd.compressLiteralsOnly(data)) }
            consider(try Zstd.compress(data, level: 1))
            if level >= 10 { consider(try Zstd.compress(data, level: level)) }
        }
        if let best, Double(best.count) < Double(data.count) * (1 - PackFormat.minimumSaving) {
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
