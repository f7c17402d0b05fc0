/// Reads tensor index entries from header JSON, checking every field and every size relation
/// before anything is allocated from them.
enum PackIndexParser {
    static func entry(_ json: StrictJSON, file: String) throws -> PackTensorEntry {
        func fail(_ problem: String, _ name: String? = nil) -> InputError {
            InputError(file: file, problem: (name.map { "tensor \($0): " } ?? "index entry: ") + problem)
        }
        guard let name = json["name"]?.stringValue, !name.isEmpty else { throw fail("has no name") }
        guard let dtypeName = json["dtype"]?.stringValue, let dtype = DType(rawValue: dtypeName) else {
            throw fail("has an unknown dtype", name)
        }
        guard let shapeItems = json["shape"]?.arrayValue else { throw fail("has no shape", name) }
        let shape = try shapeItems.map { item -> Int in
            guard let dim = item.integerValue, dim >= 0 else { throw fail("shape must hold non-negative integers", name) }
            return Int(dim)
        }
        guard let byteCount = TensorInfo(name: name, dtype: dtype, shape: shape).byteCount else {
            throw fail("shape \(Shape.describe(shape)) overflows", name)
        }
        guard let chunkItems = json["chunks"]?.arrayValue else { throw fail("has no chunks", name) }
        var chunks: [PackChunk] = []
        var total = 0
        for (number, item) in chunkItems.enumerated() {
            func field(_ key: String) throws -> Int {
                guard let value = item[key]?.integerValue, value >= 0 else { throw fail("chunk \(number) lacks a valid \(key)", name) }
                return Int(value)
            }
            func hash(_ key: String) throws -> UInt64 {
                guard let text = item[key]?.stringValue, text.utf8.count == 16, let value = UInt64(text, radix: 16) else {
                    throw fail("chunk \(number) lacks a valid \(key)", name)
                }
                return value
            }
            let offset = try field("offset"), rawLength = try field("raw_length"), storedLength = try field("stored_length")
            guard rawLength > 0, rawLength <= PackFormat.maximumChunkSize, rawLength % dtype.byteSize == 0 else {
                throw fail("chunk \(number) raw_length \(rawLength) is outside 1…\(PackFormat.maximumChunkSize) or not whole elements", name)
            }
            guard storedLength > 0, rawLength <= storedLength * PackFormat.maximumExpansion else {
                throw fail("chunk \(number) claims \(rawLength) bytes from \(storedLength) stored (beyond any zstd ratio)", name)
            }
            guard let transformName = item["transform"]?.stringValue, let transform = PackFormat.Transform(rawValue: transformName) else {
                throw fail("chunk \(number) has an unknown transform", name)
            }
            guard let planeItems = item["planes"]?.arrayValue else { throw fail("chunk \(number) has no planes", name) }
            let planes = try planeItems.map { plane -> PackPlane in
                guard let codecName = plane["codec"]?.stringValue, let codec = PackFormat.Codec(rawValue: codecName),
                      let length = plane["stored_length"]?.integerValue, length >= 0 else {
                    throw fail("chunk \(number) has a malformed plane", name)
                }
                return PackPlane(codec: codec, storedLength: Int(length))
            }
            let expectedPlanes = transform == .none ? 1 : BytePlanes.planeCount(dtype)
            guard planes.count == expectedPlanes else {
                throw fail("chunk \(number) has \(planes.count) planes, transform \(transform.rawValue) on \(dtype.rawValue) needs \(expectedPlanes.map(String.init) ?? "none")", name)
            }
            guard planes.reduce(0, { $0 + $1.storedLength }) == storedLength else {
                throw fail("chunk \(number) plane lengths do not add up to stored_length", name)
            }
            total += rawLength
            guard total <= byteCount else { throw fail("chunks hold more bytes than \(Shape.describe(shape)) × \(dtype.rawValue)", name) }
            chunks.append(PackChunk(offset: offset, rawLength: rawLength, storedLength: storedLength, transform: transform,
                                    planes: planes, rawHash: try hash("raw_xxh3"), storedHash: try hash("stored_xxh3")))
        }
        guard total == byteCount else {
            throw fail("chunks hold \(total) bytes but \(Shape.describe(shape)) × \(dtype.rawValue) is \(byteCount)", name)
        }
        return PackTensorEntry(name: name, dtype: dtype, shape: shape, chunks: chunks)
    }
}
