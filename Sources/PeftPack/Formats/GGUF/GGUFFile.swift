import CDTypeKernels
import Foundation

/// GGUF v3 (ggml's single-file format, as llama.cpp reads it): "GGUF", version, tensor and
/// key/value counts, the key/value pairs, the tensor descriptions (name, dims innermost first,
/// ggml type, offset into the data section) and the data section aligned to `general.alignment`
/// (32 by default). Little-endian throughout.
public enum GGUF {
    public static let magic: [UInt8] = Array("GGUF".utf8)
    public static let version: UInt32 = 3
    public static let defaultAlignment = 32

    public enum Value: Equatable, Sendable {
        case uint16(UInt16)
        case uint32(UInt32)
        case int32(Int32)
        case float32(Float)
        case bool(Bool)
        case string(String)
        case uint64(UInt64)
        case other(type: UInt32)

        var typeCode: UInt32 {
            switch self {
            case .uint16: 2
            case .uint32: 4
            case .int32: 5
            case .float32: 6
            case .bool: 7
            case .string: 8
            case .uint64: 10
            case .other(let type): type
            }
        }

        public var stringValue: String? { if case .string(let value) = self { value } else { nil } }

        public var doubleValue: Double? {
            switch self {
            case .float32(let value): Double(value)
            case .uint16(let value): Double(value)
            case .uint32(let value): Double(value)
            case .int32(let value): Double(value)
            case .uint64(let value): Double(value)
            default: nil
            }
        }
    }

    /// The ggml element types peftpack reads (ggml's numbering); it writes f32, f16, bf16 and
    /// q8_0. Block layouts and dequantization are in GGUFQuants.swift.
    public enum ElementType: UInt32, Sendable, CaseIterable {
        case f32 = 0
        case f16 = 1
        case q4_0 = 2
        case q4_1 = 3
        case q5_0 = 6
        case q5_1 = 7
        case q8_0 = 8
        case q4_K = 12
        case q5_K = 13
        case q6_K = 14
        case bf16 = 30
    }

    public struct TensorEntry {
        public var name: String
        /// Row-major shape (outermost first): GGUF's dims reversed.
        public var shape: [Int]
        public var type: ElementType
        public var offset: Int
        public var byteCount: Int
    }

    // MARK: writing

    /// A whole GGUF file in memory: adapters are small, and the header needs every size first.
    public static func write(metadata: [(String, Value)], tensors: [(name: String, shape: [Int], type: ElementType, data: [UInt8])]) -> [UInt8] {
        var out: [UInt8] = magic
        append(&out, version)
        append(&out, UInt64(tensors.count))
        append(&out, UInt64(metadata.count))
        for (key, value) in metadata {
            appendString(&out, key)
            append(&out, value.typeCode)
            switch value {
            case .uint16(let v): append(&out, v)
            case .uint32(let v): append(&out, v)
            case .int32(let v): append(&out, UInt32(bitPattern: v))
            case .float32(let v): append(&out, v.bitPattern)
            case .bool(let v): out.append(v ? 1 : 0)
            case .string(let v): appendString(&out, v)
            case .uint64(let v): append(&out, v)
            case .other: preconditionFailure("only scalar values are written")
            }
        }
        var offset = 0
        for tensor in tensors {
            appendString(&out, tensor.name)
            append(&out, UInt32(tensor.shape.count))
            for dimension in tensor.shape.reversed() { append(&out, UInt64(dimension)) }
            append(&out, tensor.type.rawValue)
            append(&out, UInt64(offset))
            offset += (tensor.data.count + defaultAlignment - 1) / defaultAlignment * defaultAlignment
        }
        out += [UInt8](repeating: 0, count: (defaultAlignment - out.count % defaultAlignment) % defaultAlignment)
        for tensor in tensors {
            out += tensor.data
            out += [UInt8](repeating: 0, count: (defaultAlignment - tensor.data.count % defaultAlignment) % defaultAlignment)
        }
        return out
    }

    static func append<T: FixedWidthInteger>(_ out: inout [UInt8], _ value: T) {
        withUnsafeBytes(of: value.littleEndian) { out += $0 }
    }

    static func appendString(_ out: inout [UInt8], _ text: String) {
        append(&out, UInt64(text.utf8.count))
        out += Array(text.utf8)
    }

    /// fp32 values in whole blocks of `type`, by its reference quantizer (ElementType.quantize), a
    /// chunk of blocks at a time.
    static func encode(_ values: [Float], as type: ElementType) -> [UInt8] {
        let (elements, blockBytes) = type.block
        precondition(values.count % elements == 0, "\(values.count) values are not whole \(type.ggmlName) blocks")
        let blocks = values.count / elements
        var out = [UInt8](repeating: 0, count: blocks * blockBytes)
        values.withUnsafeBufferPointer { source in
            out.withUnsafeMutableBytes { destination in
                let chunk = max(1, (1 << 16) / elements)
                var block = 0
                while block < blocks {
                    let end = min(blocks, block + chunk)
                    type.quantize(UnsafeBufferPointer(rebasing: source[(block * elements)..<(end * elements)]),
                                  into: UnsafeMutableRawBufferPointer(rebasing: destination[(block * blockBytes)..<(end * blockBytes)]))
                    block = end
                }
            }
        }
        return out
    }

    // MARK: reading

    /// A GGUF file read with every length and offset checked against the file before use.
    public final class File {
        public let path: String
        public let metadata: [(key: String, value: Value)]
        /// Where each key/value pair lies in the file (key, type and value), so a model written
        /// back carries every entry byte for byte, tokenizer arrays included.
        let metadataRanges: [(key: String, bytes: Range<Int>)]
        public let alignment: Int
        public let tensors: [TensorEntry]
        private let mapped: MappedFile
        private let dataStart: Int

        public init(path: String) throws {
            self.path = path
            mapped = try MappedFile(path: path)
            var cursor = Cursor(bytes: mapped.bytes, path: path)
            guard try cursor.bytes(4) == GGUF.magic else { throw cursor.fail("is not a GGUF file (bad magic)") }
            let version = try cursor.u32()
            guard version == 2 || version == 3 else { throw cursor.fail("is GGUF version \(version); only versions 2 and 3 are supported") }
            let tensorCount = try cursor.u64(), keyCount = try cursor.u64()
            // Every key/value and tensor entry takes at least 8 bytes: counts beyond that are lies.
            guard tensorCount <= UInt64(mapped.bytes.count / 8), keyCount <= UInt64(mapped.bytes.count / 8) else {
                throw cursor.fail("claims \(tensorCount) tensors and \(keyCount) metadata entries, more than the file could hold")
            }
            var metadata: [(String, Value)] = []
            var ranges: [(String, Range<Int>)] = []
            for _ in 0..<keyCount {
                let start = cursor.position
                let key = try cursor.string()
                metadata.append((key, try cursor.value(depth: 0)))
                ranges.append((key, start..<cursor.position))
            }
            self.metadata = metadata
            metadataRanges = ranges
            var alignment = GGUF.defaultAlignment
            if let value = metadata.first(where: { $0.0 == "general.alignment" })?.1 {
                guard case .uint32(let declared) = value, declared > 0, declared.nonzeroBitCount == 1, declared <= 1 << 16 else {
                    throw cursor.fail("general.alignment must be a power of two")
                }
                alignment = Int(declared)
            }
            var entries: [(name: String, shape: [Int], type: UInt32, offset: UInt64)] = []
            for _ in 0..<tensorCount {
                let name = try cursor.string()
                let dimensions = try cursor.u32()
                guard (1...4).contains(dimensions) else { throw cursor.fail("tensor \(name) has \(dimensions) dimensions (1–4 allowed)") }
                var shape: [Int] = []
                for _ in 0..<dimensions {
                    let extent = try cursor.u64()
                    guard extent > 0, extent < 1 << 40 else { throw cursor.fail("tensor \(name) has a dimension of \(extent)") }
                    shape.insert(Int(extent), at: 0)
                }
                entries.append((name, shape, try cursor.u32(), try cursor.u64()))
            }
            self.alignment = alignment
            dataStart = (cursor.position + alignment - 1) / alignment * alignment
            var tensors: [TensorEntry] = []
            var names = Set<String>()
            // ggml (gguf_init_from_file) lays tensors out in index order, each starting where the
            // one before ends rounded up to the alignment: an offset that differs means some
            // tensor's bytes do not match its type and shape.
            var expectedOffset = 0
            for entry in entries {
                guard names.insert(entry.name).inserted else { throw cursor.fail("tensor \(entry.name) appears twice") }
                guard let type = ElementType(rawValue: entry.type) else {
                    throw InputError(file: path, tensor: entry.name, problem: "is stored as \(ElementType.describe(code: entry.type)), which peftpack does not read (it reads \(ElementType.readableNames))", kind: .unsupportedTensorType)
                }
                guard let size = type.byteCount(shape: entry.shape) else {
                    if Shape.elementCount(entry.shape) == nil || entry.shape.last! % type.block.elements == 0 {
                        throw InputError(file: path, tensor: entry.name, problem: "has shape \(Shape.describe(entry.shape)), more bytes than any file holds")
                    }
                    throw InputError(file: path, tensor: entry.name, problem: "has shape \(Shape.describe(entry.shape)), whose rows of \(entry.shape.last!) are not whole \(type.ggmlName) blocks of \(type.block.elements)")
                }
                guard entry.offset == UInt64(expectedOffset) else {
                    guard let before = tensors.last else {
                        throw InputError(file: path, tensor: entry.name, problem: "starts at data offset \(entry.offset); the first tensor starts at 0")
                    }
                    throw InputError(file: path, tensor: before.name, problem: "is \(before.type.ggmlName) of shape \(Shape.describe(before.shape)), which takes \(before.byteCount) bytes and ends at data offset \(expectedOffset) with padding, but the next tensor \(entry.name) starts at \(entry.offset)")
                }
                guard size <= mapped.bytes.count - dataStart - expectedOffset else {
                    throw InputError(file: path, tensor: entry.name, problem: "needs \(size) bytes (\(type.ggmlName), shape \(Shape.describe(entry.shape))) but the file ends \(max(0, mapped.bytes.count - dataStart - expectedOffset)) bytes after its start (truncated?)")
                }
                tensors.append(TensorEntry(name: entry.name, shape: entry.shape, type: type, offset: expectedOffset, byteCount: size))
                expectedOffset += (size + alignment - 1) / alignment * alignment
            }
            self.tensors = tensors
        }

        public func value(_ key: String) -> Value? { metadata.first { $0.key == key }?.value }

        /// The key/value pair's bytes as the file stores them.
        func rawMetadataEntry(at index: Int) -> [UInt8] {
            Array(mapped.bytes[metadataRanges[index].bytes])
        }

        /// The stored bytes of a tensor (blocks, for quantized types), straight from the map.
        public func withBytes<R>(_ entry: TensorEntry, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
            try body(UnsafeRawBufferPointer(rebasing: mapped.bytes[(dataStart + entry.offset)..<(dataStart + entry.offset + entry.byteCount)]))
        }

        /// The tensor's values widened to fp32 as gguf-py's `dequantize` computes them.
        public func floats(_ entry: TensorEntry) -> [Float] {
            let count = Shape.elementCount(entry.shape)!
            return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                dequantize(entry, into: buffer)
                initialized = count
            }
        }

        /// The same into `destination`, which holds exactly the tensor's elements.
        public func dequantize(_ entry: TensorEntry, into destination: UnsafeMutableBufferPointer<Float>) {
            precondition(destination.count == Shape.elementCount(entry.shape)!)
            withBytes(entry) { entry.type.dequantize($0, into: destination) }
        }
    }

    struct Cursor {
        let bytes: UnsafeRawBufferPointer
        let path: String
        var position = 0

        init(bytes: UnsafeRawBufferPointer, path: String) {
            self.bytes = bytes
            self.path = path
        }

        func fail(_ problem: String) -> InputError { InputError(file: path, problem: problem) }

        mutating func bytes(_ count: Int) throws -> [UInt8] {
            guard count >= 0, count <= bytes.count - position else { throw fail("is truncated at byte \(position)") }
            defer { position += count }
            return Array(bytes[position..<(position + count)])
        }

        mutating func integer<T: FixedWidthInteger>(_: T.Type) throws -> T {
            guard MemoryLayout<T>.size <= bytes.count - position else { throw fail("is truncated at byte \(position)") }
            defer { position += MemoryLayout<T>.size }
            return T(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: T.self))
        }

        mutating func u32() throws -> UInt32 { try integer(UInt32.self) }
        mutating func u64() throws -> UInt64 { try integer(UInt64.self) }

        mutating func string() throws -> String {
            let length = try u64()
            guard length <= UInt64(bytes.count - position) else { throw fail("has a string of \(length) bytes past the end of the file") }
            return String(decoding: try self.bytes(Int(length)), as: UTF8.self)
        }

        /// Scalars are kept; arrays (tokenizer tables in model files) are skipped with their
        /// lengths checked.
        mutating func value(depth: Int) throws -> Value {
            let type = try u32()
            switch type {
            case 0, 1, 7: let byte = try self.bytes(1)[0]; return type == 7 ? .bool(byte != 0) : .other(type: type)
            case 2: return .uint16(try integer(UInt16.self))
            case 3: _ = try self.bytes(2); return .other(type: type)
            case 4: return .uint32(try u32())
            case 5: return .int32(Int32(bitPattern: try u32()))
            case 6: return .float32(Float(bitPattern: try u32()))
            case 8: return .string(try string())
            case 10: return .uint64(try u64())
            case 11, 12: _ = try self.bytes(8); return .other(type: type)
            case 9:
                guard depth < 4 else { throw fail("nests arrays too deeply") }
                let elementType = try u32()
                let count = try u64()
                guard count <= UInt64(bytes.count - position) else { throw fail("has an array of \(count) elements past the end of the file") }
                for _ in 0..<count { try skip(elementType, depth: depth + 1) }
                return .other(type: 9)
            default:
                throw fail("has a metadata value of unknown type \(type)")
            }
        }

        mutating func skip(_ type: UInt32, depth: Int) throws {
            switch type {
            case 0, 1, 7: _ = try bytes(1)
            case 2, 3: _ = try bytes(2)
            case 4, 5, 6: _ = try bytes(4)
            case 10, 11, 12: _ = try bytes(8)
            case 8: _ = try string()
            case 9:
                guard depth < 4 else { throw fail("nests arrays too deeply") }
                let elementType = try u32()
                let count = try u64()
                guard count <= UInt64(bytes.count - position) else { throw fail("has an array of \(count) elements past the end of the file") }
                for _ in 0..<count { try skip(elementType, depth: depth + 1) }
            default: throw fail("has a metadata value of unknown type \(type)")
            }
        }
    }
}
