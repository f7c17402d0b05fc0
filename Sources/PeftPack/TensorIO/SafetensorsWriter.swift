import Foundation

/// Writes safetensors files byte-identical to the reference writer (`safetensors.torch.save_file`):
/// tensors ordered by dtype (the reference's dtype order, descending) then name (byte order); header
/// JSON with `__metadata__` first, no white space; header padded with spaces to a multiple of 8
/// bytes. The reference writes metadata keys in its hash map's order, which changes from run to run,
/// so a dictionary is written with sorted keys and an explicit entry list in its own order. Files are
/// written atomically; memory stays bounded by one tensor.
public enum SafetensorsWriter {
    /// The reference implementation's dtype order (its `Dtype` enum); tensors are written with the
    /// larger dtypes first so every tensor stays aligned to its element size.
    static func rank(_ dtype: DType) -> Int {
        switch dtype {
        case .bool: 0
        case .u8: 1
        case .i8: 2
        case .i16: 3
        case .u16: 4
        case .f16: 5
        case .bf16: 6
        case .i32: 7
        case .u32: 8
        case .f32: 9
        case .f64: 10
        case .i64: 11
        case .u64: 12
        }
    }

    public static func canonicalOrder(_ infos: [TensorInfo]) -> [TensorInfo] {
        infos.sorted { left, right in
            let (l, r) = (rank(left.dtype), rank(right.dtype))
            return l != r ? l > r : left.name.utf8.lexicographicallyPrecedes(right.name.utf8)
        }
    }

    /// Metadata entries in the deterministic order used for a dictionary: keys sorted.
    public static func sortedEntries(_ metadata: [String: String]?) -> [(key: String, value: String)]? {
        metadata.map { $0.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) } }
    }

    public static func headerBytes(for ordered: [TensorInfo], metadata: [String: String]?) throws -> [UInt8] {
        try headerBytes(for: ordered, metadataEntries: sortedEntries(metadata))
    }

    /// The 8-byte length prefix and padded JSON header for tensors already in canonical order.
    public static func headerBytes(for ordered: [TensorInfo], metadataEntries: [(key: String, value: String)]?) throws -> [UInt8] {
        var json = "{"
        var first = true
        if let metadataEntries {
            json += "\"__metadata__\":{"
            json += metadataEntries.map { "\(jsonString($0.key)):\(jsonString($0.value))" }.joined(separator: ",")
            json += "}"
            first = false
        }
        var offset = 0
        for info in ordered {
            guard let size = info.byteCount else {
                throw InputError(file: "(writing)", tensor: info.name, problem: "shape \(Shape.describe(info.shape)) overflows")
            }
            let (end, overflow) = offset.addingReportingOverflow(size)
            guard !overflow else {
                throw InputError(file: "(writing)", tensor: info.name, problem: "total data size overflows")
            }
            if !first { json += "," }
            first = false
            let shape = info.shape.map(String.init).joined(separator: ",")
            json += "\(jsonString(info.name)):{\"dtype\":\"\(info.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(end)]}"
            offset = end
        }
        json += "}"
        var header = Array(json.utf8)
        header.append(contentsOf: repeatElement(UInt8(ascii: " "), count: (8 - header.count % 8) % 8))
        var length = UInt64(header.count).littleEndian
        let prefix = withUnsafeBytes(of: &length) { Array($0) }
        return prefix + header
    }

    /// JSON string literal as serde_json writes it: quotes, backslashes and control characters
    /// escaped, everything else (non-ASCII included) verbatim.
    static func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case _ where scalar.value < 0x20:
                out += String(format: "\\u%04x", scalar.value)
            default:
                out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    /// Streams one file: the header is written up front, then each tensor in canonical order.
    public final class FileStream {
        public let ordered: [TensorInfo]
        private let output: AtomicFileWriter
        private var next = 0

        public convenience init(destination: String, tensors: [TensorInfo], metadata: [String: String]?, direct: Bool = false) throws {
            try self.init(destination: destination, tensors: tensors, metadataEntries: SafetensorsWriter.sortedEntries(metadata), direct: direct)
        }

        /// `direct`: write through O_DIRECT where possible (model-sized outputs; see DirectWriter).
        public init(destination: String, tensors: [TensorInfo], metadataEntries: [(key: String, value: String)]?,
                    direct: Bool = false) throws {
            ordered = SafetensorsWriter.canonicalOrder(tensors)
            let names = Set(tensors.map(\.name))
            guard names.count == tensors.count else {
                throw InputError(file: destination, problem: "two tensors share a name")
            }
            if let metadataEntries, Set(metadataEntries.map(\.key)).count != metadataEntries.count {
                throw InputError(file: destination, problem: "two metadata entries share a key")
            }
            let header = try SafetensorsWriter.headerBytes(for: ordered, metadataEntries: metadataEntries)
            output = try AtomicFileWriter(destination: destination, direct: direct)
            try output.write(header)
        }

        /// The tensor the stream expects next.
        public var nextTensor: TensorInfo? { next < ordered.count ? ordered[next] : nil }

        public func append(_ bytes: UnsafeRawBufferPointer) throws {
            guard let expected = nextTensor else {
                throw InputError(file: output.destination, problem: "more tensors written than declared")
            }
            guard bytes.count == expected.byteCount, piece == 0 else {
                throw InputError(file: output.destination, tensor: expected.name, problem: "got \(bytes.count) bytes, expected \(expected.byteCount ?? -1)")
            }
            try output.write(bytes)
            next += 1
        }

        /// Bytes of the next tensor written so far by `appendPiece`.
        public private(set) var piece = 0

        /// Appends the next part of the next tensor; it is complete once its parts add up to its
        /// size (an empty tensor takes one empty part).
        public func appendPiece(_ bytes: UnsafeRawBufferPointer) throws {
            guard let expected = nextTensor, let size = expected.byteCount else {
                throw InputError(file: output.destination, problem: "more tensors written than declared")
            }
            guard bytes.count <= size - piece else {
                throw InputError(file: output.destination, tensor: expected.name, problem: "got more than its \(size) bytes")
            }
            try output.write(bytes)
            piece += bytes.count
            if piece == size {
                next += 1
                piece = 0
            }
        }

        /// Checks every declared tensor was written and flushes the data, without moving the file
        /// into place yet.
        public func finish() throws {
            guard next == ordered.count else {
                throw InputError(file: output.destination, tensor: ordered[next].name, problem: "was declared but never written")
            }
            try output.finishWriting()
        }

        public func commit() throws {
            try finish()
            try output.commit()
        }

        public func abandon() { output.abandon() }
    }

    /// Writes a whole file from tensors in memory.
    public static func write(_ tensors: [String: HostTensor], metadata: [String: String]? = nil, to destination: String) throws {
        try write(tensors, metadataEntries: sortedEntries(metadata), to: destination)
    }

    public static func write(_ tensors: [String: HostTensor], metadataEntries: [(key: String, value: String)]?, to destination: String) throws {
        let infos = tensors.map { TensorInfo(name: $0.key, dtype: $0.value.dtype, shape: $0.value.shape) }
        let stream = try FileStream(destination: destination, tensors: infos, metadataEntries: metadataEntries)
        do {
            while let info = stream.nextTensor {
                try tensors[info.name]!.bytes.withUnsafeBytes { try stream.append($0) }
            }
            try stream.commit()
        } catch {
            stream.abandon()
            throw error
        }
    }
}
