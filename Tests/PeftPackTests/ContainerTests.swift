import Foundation
import Testing
@testable import PeftPack

@Suite struct ContainerTests {
    static func gaussianBF16(count: Int, seed: UInt64) -> HostTensor {
        var generator = SplitMix(seed: seed)
        var bytes = [UInt8]()
        bytes.reserveCapacity(count * 2)
        for _ in 0..<count {
            let u1 = max(Double(generator.next() >> 11) / Double(1 << 53), 1e-300), u2 = Double(generator.next() >> 11) / Double(1 << 53)
            let value = Float(0.02 * (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2))
            let bits = UInt16(truncatingIfNeeded: value.bitPattern >> 16)
            bytes += [UInt8(truncatingIfNeeded: bits), UInt8(truncatingIfNeeded: bits >> 8)]
        }
        return HostTensor(dtype: .bf16, shape: [count], bytes: bytes)
    }

    static func randomTensor(_ dtype: DType, shape: [Int], seed: UInt64) -> HostTensor {
        var generator = SplitMix(seed: seed)
        let count = (Shape.elementCount(shape) ?? 0) * dtype.byteSize
        return HostTensor(dtype: dtype, shape: shape, bytes: (0..<count).map { _ in UInt8(truncatingIfNeeded: generator.next()) })
    }

    static let document = StrictJSON.object([("creator", .string("test")), ("adapters", .array([]))])

    static func writePack(_ tensors: [(String, HostTensor)], options: PackWriter.Options = .init(chunkSize: 4096)) throws -> String {
        let path = Fixtures.temporaryDirectory() + "/test.peftpack"
        let writer = try PackWriter(destination: path, options: options)
        for (name, tensor) in tensors { try writer.append(tensor, name: name) }
        try writer.finish(document: document)
        return path
    }

    @Test func everyDtypeAndOddShapeRoundTrips() throws {
        var tensors: [(String, HostTensor)] = []
        for (index, dtype) in DType.allCases.enumerated() {
            tensors.append(("\(dtype.rawValue).odd", Self.randomTensor(dtype, shape: [3, 1001], seed: UInt64(index))))
        }
        tensors.append(("scalar", Self.randomTensor(.f32, shape: [], seed: 99)))
        tensors.append(("empty", Self.randomTensor(.bf16, shape: [0, 7], seed: 98)))
        tensors.append(("gaussian", Self.gaussianBF16(count: 20_000, seed: 5)))
        let path = try Self.writePack(tensors)
        let reader = try PackReader(path: path)
        #expect(reader.document.canonicalBytes() == Self.document.canonicalBytes())
        #expect(reader.tensors.map(\.name) == tensors.map(\.0))
        for (name, tensor) in tensors {
            let read = try reader.readTensor(name)
            #expect(read.bytes == tensor.bytes, "\(name)")
            #expect(read.shape == tensor.shape && read.dtype == tensor.dtype)
        }
        try reader.verifyAll()
        #expect(reader.entry(named: "gaussian")!.chunks.count > 1)
    }

    @Test func packsAreDeterministicWhateverTheThreadCount() throws {
        let tensors = [("a", Self.gaussianBF16(count: 50_000, seed: 1)), ("b", Self.randomTensor(.f32, shape: [999], seed: 2))]
        let one = try Data(contentsOf: URL(fileURLWithPath: Self.writePack(tensors, options: .init(chunkSize: 8192, threads: 1))))
        let two = try Data(contentsOf: URL(fileURLWithPath: Self.writePack(tensors, options: .init(chunkSize: 8192, threads: 2))))
        #expect(one == two)
    }

    @Test func uncompressibleTensorIsStoredRawAndReadZeroCopy() throws {
        let noise = Self.randomTensor(.u8, shape: [10_000], seed: 3)
        let reader = try PackReader(path: Self.writePack([("noise", noise)]))
        let entry = try #require(reader.entry(named: "noise"))
        #expect(entry.isStoredRaw)
        #expect(entry.chunks.allSatisfy { $0.offset % 64 == 0 })
        #expect(try reader.withRawBytes("noise") { Array($0) } == noise.bytes)
    }

    /// The pack must beat plain zstd on float weights: the exponent plane alone is cheap to code.
    @Test func gaussianBF16PacksSmallerThanPlainZstd() throws {
        let tensor = Self.gaussianBF16(count: 262_144, seed: 7)
        let reader = try PackReader(path: Self.writePack([("w", tensor)], options: .init(chunkSize: 1 << 20)))
        let plain = try tensor.bytes.withUnsafeBytes { try Zstd.compress($0, level: 3) }.count
        let packed = reader.entry(named: "w")!.storedBytes
        #expect(Double(packed) < 0.92 * Double(plain), "pack \(packed) vs zstd -3 \(plain)")
    }

    @Test func bytePlaneTransformIsExactForEveryPattern() {
        for dtype in [DType.bf16, .f16] {
            let raw = (0..<65536).flatMap { [UInt8(truncatingIfNeeded: $0), UInt8(truncatingIfNeeded: $0 >> 8)] }
            var planes = [UInt8](repeating: 0, count: raw.count)
            var back = [UInt8](repeating: 0, count: raw.count)
            raw.withUnsafeBytes { source in planes.withUnsafeMutableBytes { BytePlanes.split(dtype, raw: source, planes: $0) } }
            planes.withUnsafeBytes { source in back.withUnsafeMutableBytes { BytePlanes.merge(dtype, planes: source, raw: $0) } }
            #expect(back == raw, "\(dtype)")
        }
        let f32 = Self.randomTensor(.f32, shape: [4096], seed: 11).bytes
        var planes = [UInt8](repeating: 0, count: f32.count), back = planes
        f32.withUnsafeBytes { source in planes.withUnsafeMutableBytes { BytePlanes.split(.f32, raw: source, planes: $0) } }
        planes.withUnsafeBytes { source in back.withUnsafeMutableBytes { BytePlanes.merge(.f32, planes: source, raw: $0) } }
        #expect(back == f32)
        // The bf16 exponent byte is bits 14…7 of the pattern.
        #expect(planes.count == f32.count)
    }
}

/// A small deterministic generator so tests do not depend on the platform's random source.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
