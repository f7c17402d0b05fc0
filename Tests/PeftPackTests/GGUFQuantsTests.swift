import Foundation
import Testing
@testable import PeftPack

/// ggml block types dequantized as gguf-py 0.19 does (fixtures/data/gguf_quants: the vectors and
/// gguf's own `dequantize` of them), and GGUF files whose tensors do not fit their types refused
/// in one line.
@Suite struct GGUFQuantsTests {
    static let vectors = Fixtures.path("gguf_quants/vectors.gguf")

    @Test(arguments: GGUF.ElementType.allCases)
    func dequantizesBitForBitAsGGUFPy(type: GGUF.ElementType) throws {
        let file = try GGUF.File(path: Self.vectors)
        let entry = try #require(file.tensors.first { $0.name == type.ggmlName })
        #expect(entry.type == type)
        let expected = try SafetensorsFile(path: Fixtures.path("gguf_quants/vectors.expected.safetensors")).tensor(type.ggmlName)
        #expect(entry.shape == expected.shape)
        let got = file.floats(entry).map(\.bitPattern), want = expected.floats().map(\.bitPattern)
        let first = zip(got, want).enumerated().first { $0.element.0 != $0.element.1 }
        #expect(got.count == want.count && first == nil, "\(type.ggmlName): element \(first?.offset ?? -1) differs")
    }

    /// A GGUF file of tensors given as (name, shape row-major, ggml type code, bytes), laid out as
    /// gguf-py writes it; `offsets` overrides the data offsets.
    static func file(_ tensors: [(String, [Int], UInt32, [UInt8])], offsets: [UInt64]? = nil) -> String {
        var out = GGUF.magic
        GGUF.append(&out, GGUF.version)
        GGUF.append(&out, UInt64(tensors.count))
        GGUF.append(&out, UInt64(0))
        var offset: UInt64 = 0
        for (index, (name, shape, type, data)) in tensors.enumerated() {
            GGUF.appendString(&out, name)
            GGUF.append(&out, UInt32(shape.count))
            for extent in shape.reversed() { GGUF.append(&out, UInt64(extent)) }
            GGUF.append(&out, type)
            GGUF.append(&out, offsets?[index] ?? offset)
            offset += UInt64((data.count + 31) / 32 * 32)
        }
        out += [UInt8](repeating: 0, count: (32 - out.count % 32) % 32)
        for (_, _, _, data) in tensors { out += data + [UInt8](repeating: 0, count: (32 - data.count % 32) % 32) }
        let path = Fixtures.temporaryDirectory() + "/bad.gguf"
        FileManager.default.createFile(atPath: path, contents: Data(out))
        return path
    }

    static func refusal(_ path: String) -> InputError? {
        do {
            _ = try GGUF.File(path: path)
            return nil
        } catch {
            return error as? InputError
        }
    }

    @Test func aTensorWhoseBytesDoNotMatchItsTypeAndShapeIsNamed() throws {
        // 18 bytes of Q4_0 hold one block of 32; the shape claims two.
        let path = Self.file([("blk.0.attn_q.weight", [2, 32], 2, [UInt8](repeating: 0, count: 18)), ("next", [8], 0, [UInt8](repeating: 0, count: 32))])
        let error = try #require(Self.refusal(path))
        #expect(error.tensor == "blk.0.attn_q.weight" && error.kind == .malformed)
        #expect(error.description.contains("Q4_0") && error.description.contains("36 bytes") && !error.description.contains("\n"), "\(error)")
    }

    @Test func rowsThatAreNotWholeBlocksAreRefused() throws {
        let error = try #require(Self.refusal(Self.file([("w", [4, 48], 12, [UInt8](repeating: 0, count: 144))])))
        #expect(error.tensor == "w" && error.description.contains("Q4_K blocks of 256"), "\(error)")
    }

    @Test func anUnknownTypeIsNamedWithTheSupportedOnes() throws {
        for (code, name) in [(UInt32(10), "Q2_K"), (99, "ggml type 99")] {
            let error = try #require(Self.refusal(Self.file([("w", [32], code, [UInt8](repeating: 0, count: 32))])))
            #expect(error.kind == .unsupportedTensorType && error.tensor == "w")
            #expect(error.description.contains(name) && error.description.contains("Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, BF16"), "\(error)")
            #expect(!error.description.contains("\n"))
        }
    }

    /// A claimed size is checked against the file before anything is read or allocated.
    @Test func truncatedDataIsRefusedNamingTheTensor() throws {
        let good = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Self.vectors)))
        let path = Fixtures.temporaryDirectory() + "/truncated.gguf"
        FileManager.default.createFile(atPath: path, contents: Data(good.dropLast(700)))
        let error = try #require(Self.refusal(path))
        #expect(error.tensor == "Q6_K" && error.description.contains("truncated"), "\(error)")
        let huge = Self.file([("w", [1 << 20, 1 << 12], 8, [UInt8](repeating: 0, count: 34))])
        #expect(Self.refusal(huge)?.tensor == "w")
    }

    @Test func anOffsetOutOfOrderIsRefused() throws {
        let path = Self.file([("a", [32], 0, [UInt8](repeating: 0, count: 128)), ("b", [32], 0, [UInt8](repeating: 0, count: 128))], offsets: [0, 64])
        let error = try #require(Self.refusal(path))
        #expect(error.tensor == "a" && error.description.contains("next tensor b starts at 64"), "\(error)")
    }
}
