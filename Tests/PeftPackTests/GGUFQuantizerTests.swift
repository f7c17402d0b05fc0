import Foundation
import Testing
@testable import PeftPack

/// Quantization to every ggml type peftpack writes (fixtures/data/gguf_quantize): the bytes equal,
/// bit for bit, gguf-py 0.19's `gguf.quants.quantize` for the float and 32-element types and
/// ggml's portable reference quantizers for the K-quants, on Gaussian, heavy-tailed, zero,
/// constant, tiny, subnormal, single-value, negative-dominant, fp16-overflow and tie cases.
@Suite struct GGUFQuantizerTests {
    static let vectors = Fixtures.path("gguf_quantize/vectors.safetensors")

    struct Case {
        let name: String
        let rows: Range<Int>
    }

    static func cases(_ file: SafetensorsFile) throws -> [Case] {
        let json = try #require(file.metadata?["cases"]?.data(using: .utf8))
        let table = try #require(try JSONSerialization.jsonObject(with: json) as? [[Any]])
        return table.map { entry in
            let first = entry[1] as! Int, count = entry[2] as! Int
            return Case(name: entry[0] as! String, rows: first..<(first + count))
        }
    }

    static func quantized(_ type: GGUF.ElementType, _ values: [Float]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: values.count / type.block.elements * type.block.bytes)
        values.withUnsafeBufferPointer { source in out.withUnsafeMutableBytes { type.quantize(source, into: $0) } }
        return out
    }

    static func dequantized(_ type: GGUF.ElementType, _ bytes: [UInt8]) -> [Float] {
        var out = [Float](repeating: 0, count: bytes.count / type.block.bytes * type.block.elements)
        bytes.withUnsafeBytes { source in out.withUnsafeMutableBufferPointer { type.dequantize(source, into: $0) } }
        return out
    }

    /// The case and block of the first byte where `got` and `want` differ, or nil.
    static func firstDifference(_ got: [UInt8], _ want: [UInt8], type: GGUF.ElementType, cases: [Case]) -> String? {
        guard got.count == want.count else { return "\(got.count) bytes, expected \(want.count)" }
        guard let byte = zip(got, want).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset else { return nil }
        let rowBytes = 256 / type.block.elements * type.block.bytes, row = byte / rowBytes
        let name = cases.first { $0.rows.contains(row) }?.name ?? "?"
        return "\(name): row \(row), block \(byte % rowBytes / type.block.bytes), byte \(byte % type.block.bytes)"
    }

    @Test(arguments: GGUF.ElementType.writable.filter { $0 != .f32 })
    func quantizesBitForBitAsTheReference(type: GGUF.ElementType) throws {
        let file = try SafetensorsFile(path: Self.vectors)
        let got = Self.quantized(type, try file.tensor("input").floats())
        let want = try file.tensor(type.ggmlName).bytes
        let difference = Self.firstDifference(got, want, type: type, cases: try Self.cases(file))
        #expect(difference == nil, "\(type.ggmlName): \(difference ?? "")")
    }

    @Test func f32IsWrittenAsIs() throws {
        let input = try SafetensorsFile(path: Self.vectors).tensor("input").floats()
        #expect(Self.quantized(.f32, input) == input.withUnsafeBytes { Array($0) })
    }

    /// NaN payloads, infinities, signed zeros, ties and overflow edges narrow as numpy (F16) and
    /// gguf-py's bf16 rule (BF16) do.
    @Test(arguments: [GGUF.ElementType.f16, .bf16])
    func specialFloatsNarrowAsGGUFPy(type: GGUF.ElementType) throws {
        let file = try SafetensorsFile(path: Self.vectors)
        let values = try file.tensor("floats").floats()
        let got = Self.quantized(type, values), want = try file.tensor(type.ggmlName + ".floats").bytes
        let element = zip(got, want).enumerated().first { $0.element.0 != $0.element.1 }.map { $0.offset / 2 }
        #expect(got == want, "\(type.ggmlName): value \(element ?? -1) (\(element.map { values[$0].bitPattern } ?? 0)) differs")
    }

    /// dequantize(quantize(x)) on the Gaussian rows stays within each type's resolution: the RMS
    /// error relative to the rows' RMS is at most 1.5 × a uniform quantizer's step / √12, the step
    /// being a 32-value block's spread (about ±2.2σ) over the type's levels, or for the floats
    /// 1.5 × the half-ulp relative error's RMS (2^−p / √3). Measured (gguf's dequantize of the
    /// fixture, the same bytes): F16 2.1e-4, BF16 1.7e-3, Q8_0 5.3e-3, Q6_K 1.7e-2, Q5_K 3.6e-2,
    /// Q5_1 3.8e-2, Q5_0 4.2e-2, Q4_K 7.1e-2, Q4_1 7.8e-2, Q4_0 8.5e-2.
    @Test(arguments: GGUF.ElementType.writable)
    func roundTripErrorIsWithinTheTypesResolution(type: GGUF.ElementType) throws {
        let file = try SafetensorsFile(path: Self.vectors)
        let gaussian = try #require(try Self.cases(file).first { $0.name == "gaussian_weights" })
        let input = Array(try file.tensor("input").floats()[(gaussian.rows.lowerBound * 256)..<(gaussian.rows.upperBound * 256)])
        let back = Self.dequantized(type, Self.quantized(type, input))
        let error = zip(input, back).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +)
        let relative = (error / input.map { Double($0) * Double($0) }.reduce(0, +)).squareRoot()
        let bound: Double = switch type {
        case .f32: 0
        case .f16: 1.5 * 0x1p-11 / 3.0.squareRoot()
        case .bf16: 1.5 * 0x1p-8 / 3.0.squareRoot()
        case .q8_0: 1.5 * 4.4 / 255 / 12.0.squareRoot()
        case .q6_K: 1.5 * 4.4 / 63 / 12.0.squareRoot()
        case .q5_0, .q5_1, .q5_K: 1.5 * 4.4 / 31 / 12.0.squareRoot()
        case .q4_0, .q4_1, .q4_K: 1.5 * 4.4 / 15 / 12.0.squareRoot()
        }
        #expect(relative <= bound, "\(type.ggmlName): relative RMS error \(relative), bound \(bound)")
    }

    /// The fixture tells apart roundings that agree almost everywhere: Q8_0 rounding ties to even
    /// (instead of gguf's half away from zero) differs on the exact ties of `rounding_ties`.
    @Test func q8_0TiesToEvenDiffersFromTheFixture() throws {
        let file = try SafetensorsFile(path: Self.vectors)
        let ties = try #require(try Self.cases(file).first { $0.name == "rounding_ties" })
        let input = Array(try file.tensor("input").floats()[(ties.rows.lowerBound * 256)..<(ties.rows.upperBound * 256)])
        let want = Array(try file.tensor("Q8_0").bytes[(ties.rows.lowerBound * 272)..<(ties.rows.upperBound * 272)])
        var variant = Self.quantized(.q8_0, input)
        #expect(variant == want)
        for block in 0..<(input.count / 32) {
            let values = input[(block * 32)..<(block * 32 + 32)]
            let d = values.map(abs).max()! / 127, id = d == 0 ? 0 : 1 / d
            for (j, x) in values.enumerated() {
                variant[block * 34 + 2 + j] = UInt8(bitPattern: Int8((x * id).rounded(.toNearestOrEven)))
            }
        }
        let moved = zip(variant, want).filter { $0 != $1 }.count
        #expect(moved > 100, "ties to even changes \(moved) quants")
    }
}

extension GGUFQuantizerTests {
    /// The K-quant reference is ggml compiled without FMA contraction; on the `fma_sensitive`
    /// rows a contracted build (its bytes are `<type>.fused`) writes other bytes, and ours match
    /// the portable build there, not the contracted one.
    @Test(arguments: [GGUF.ElementType.q4_K, .q5_K, .q6_K])
    func kQuantsFollowThePortableBuildWhereFusedArithmeticDiffers(type: GGUF.ElementType) throws {
        let file = try SafetensorsFile(path: Self.vectors)
        let sensitive = try #require(try Self.cases(file).first { $0.name == "fma_sensitive" })
        let input = Array(try file.tensor("input").floats()[(sensitive.rows.lowerBound * 256)..<(sensitive.rows.upperBound * 256)])
        let got = Self.quantized(type, input), fused = try file.tensor(type.ggmlName + ".fused").bytes
        let reference = Array(try file.tensor(type.ggmlName).bytes[(sensitive.rows.lowerBound * type.block.bytes)..<(sensitive.rows.upperBound * type.block.bytes)])
        let blocksMoved = (0..<sensitive.rows.count).filter { block in
            let range = (block * type.block.bytes)..<((block + 1) * type.block.bytes)
            return reference[range] != fused[range]
        }.count
        #expect(got == reference, "\(type.ggmlName): differs from the portable reference on fma_sensitive")
        #expect(blocksMoved >= 4, "\(type.ggmlName): FMA contraction moves \(blocksMoved) blocks")
    }
}
