/// The parsed and validated header of one safetensors file. Validation follows the reference
/// implementation (huggingface/safetensors 0.8, `SafeTensors::read_metadata`) in the same order:
/// header length bound, the length against the file, UTF-8, JSON object (leading white space and a
/// `null` `__metadata__` are accepted, as there), each entry's dtype, shape and offsets, offsets
/// contiguous from 0 with each span equal to shape × dtype size, and the data section ending exactly
/// at the end of the file. Duplicate keys are rejected too (the reference keeps the last one).
public struct SafetensorsHeader: Sendable {
    /// The reference implementation's bound on the JSON header (100 MB).
    public static let maximumHeaderLength = 100_000_000

    public struct Entry: Sendable {
        public var info: TensorInfo
        /// Byte range relative to the start of the data section.
        public var dataRange: Range<Int>
    }

    /// Entries in data-offset order.
    public var entries: [Entry]
    /// `__metadata__` in the order the file lists it (the reference writer's order is arbitrary, so
    /// rewriting a file byte-identically needs the file's own order).
    public var metadataEntries: [(key: String, value: String)]?
    public var metadata: [String: String]? {
        metadataEntries.map { Dictionary($0, uniquingKeysWith: { first, _ in first }) }
    }
    /// Absolute file offset of the data section (8 + header length).
    public var dataStart: Int

    public init(file: String, bytes: UnsafeRawBufferPointer) throws {
        func fail(_ problem: String, tensor: String? = nil) -> InputError {
            InputError(file: file, tensor: tensor, problem: problem)
        }
        guard bytes.count >= 8 else {
            throw fail("file is \(bytes.count) bytes, too short for the 8-byte header length")
        }
        let declared = bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self).littleEndian
        guard declared <= UInt64(Self.maximumHeaderLength) else {
            throw fail("header length \(declared) exceeds the \(Self.maximumHeaderLength)-byte limit")
        }
        let headerLength = Int(declared)
        guard headerLength <= bytes.count - 8 else {
            throw fail("header length \(headerLength) runs past the end of the \(bytes.count)-byte file")
        }
        let headerBytes = UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + headerLength)])
        guard String(validating: headerBytes.bindMemory(to: UInt8.self), as: UTF8.self) != nil else {
            throw fail("header is not valid UTF-8")
        }
        let json: StrictJSON
        do {
            json = try StrictJSON.parse(headerBytes)
        } catch let error as StrictJSONError {
            throw fail("header is not valid JSON: \(error)")
        }
        guard let members = json.objectMembers else { throw fail("header is not a JSON object") }

        var entries: [Entry] = []
        var metadata: [(key: String, value: String)]?
        for (name, value) in members {
            if name == "__metadata__" {
                metadata = try Self.parseMetadata(value, fail: fail)
            } else {
                entries.append(try Self.parseEntry(name: name, value: value, fail: fail))
            }
        }
        // Empty tensors can share an offset; the name breaks the tie so `names` is deterministic.
        entries.sort { left, right in
            (left.dataRange.lowerBound, left.dataRange.upperBound) != (right.dataRange.lowerBound, right.dataRange.upperBound)
                ? (left.dataRange.lowerBound, left.dataRange.upperBound) < (right.dataRange.lowerBound, right.dataRange.upperBound)
                : left.info.name.utf8.lexicographicallyPrecedes(right.info.name.utf8)
        }
        var expectedStart = 0
        for entry in entries {
            guard entry.dataRange.lowerBound == expectedStart else {
                let kind = entry.dataRange.lowerBound < expectedStart ? "overlaps the previous tensor" : "leaves a gap after the previous tensor"
                throw fail("data_offsets [\(entry.dataRange.lowerBound), \(entry.dataRange.upperBound)] \(kind) (expected start \(expectedStart))", tensor: entry.info.name)
            }
            expectedStart = entry.dataRange.upperBound
        }
        let dataLength = bytes.count - 8 - headerLength
        guard expectedStart == dataLength else {
            throw fail(expectedStart < dataLength
                       ? "\(dataLength - expectedStart) trailing bytes after the last tensor"
                       : "tensors need \(expectedStart) data bytes but the file has \(dataLength)")
        }
        self.entries = entries
        self.metadataEntries = metadata
        self.dataStart = 8 + headerLength
    }

    private static func parseMetadata(_ value: StrictJSON, fail: (String, String?) -> InputError) throws -> [(key: String, value: String)]? {
        if value == .null { return nil }
        guard let members = value.objectMembers else { throw fail("__metadata__ is not an object", nil) }
        return try members.map { key, item in
            guard let text = item.stringValue else { throw fail("__metadata__ value for \"\(key)\" is not a string", nil) }
            return (key, text)
        }
    }

    private static func parseEntry(name: String, value: StrictJSON, fail: (String, String?) -> InputError) throws -> Entry {
        guard value.objectMembers != nil else { throw fail("entry is not an object", name) }
        guard let dtypeName = value["dtype"]?.stringValue else { throw fail("missing dtype", name) }
        guard let dtype = DType(rawValue: dtypeName) else { throw fail("unknown dtype \"\(dtypeName)\"", name) }
        guard let shapeItems = value["shape"]?.arrayValue else { throw fail("missing shape", name) }
        var shape: [Int] = []
        for item in shapeItems {
            guard let dim = item.integerValue, dim >= 0 else { throw fail("shape must hold non-negative integers", name) }
            shape.append(Int(dim))
        }
        guard let offsets = value["data_offsets"]?.arrayValue, offsets.count == 2,
              let begin = offsets[0].integerValue, let end = offsets[1].integerValue,
              begin >= 0, end >= 0 else {
            throw fail("data_offsets must be two non-negative integers", name)
        }
        guard end >= begin else { throw fail("data_offsets [\(begin), \(end)] end before they begin", name) }
        let info = TensorInfo(name: name, dtype: dtype, shape: shape)
        guard let byteCount = info.byteCount else { throw fail("shape \(Shape.describe(shape)) overflows", name) }
        guard Int(end - begin) == byteCount else {
            throw fail("shape \(Shape.describe(shape)) × \(dtype.rawValue) is \(byteCount) bytes but data_offsets span \(end - begin)", name)
        }
        return Entry(info: info, dataRange: Int(begin)..<Int(end))
    }
}
