import Foundation
import Testing
@testable import PeftPack

/// Conversions agree bit for bit with torch (fixtures/data/tensorio/dtype_tables.safetensors):
/// every 16-bit pattern widened, and hundreds of thousands of hard rounding cases narrowed.
@Suite struct DTypeConversionTests {
    static let tables = try! SafetensorsFile(path: Fixtures.path("tensorio/dtype_tables.safetensors"))

    static func bits16(_ name: String) -> [UInt16] {
        try! tables.withBytes(name) { Array($0.bindMemory(to: UInt16.self)) }
    }

    static func float32(_ name: String) -> [Float] {
        try! tables.withBytes(name) { Array($0.bindMemory(to: Float.self)) }
    }

    func widen(_ dtype: DType, expected: String) {
        let patterns = Self.bits16("bits_u16")
        #expect(patterns.count == 65536)
        let tensor = HostTensor(dtype: dtype, shape: [patterns.count], bytes: patterns.withUnsafeBytes { Array($0) })
        let widened = tensor.floats()
        let reference = Self.float32(expected)
        var mismatches = 0
        for index in 0..<patterns.count {
            let ours = widened[index], theirs = reference[index]
            if theirs.isNaN ? !ours.isNaN : ours.bitPattern != theirs.bitPattern { mismatches += 1 }
        }
        #expect(mismatches == 0, "\(mismatches) of 65536 \(dtype) patterns differ from torch")
    }

    @Test func everyBF16PatternWidensAsTorchDoes() { widen(.bf16, expected: "bf16_to_f32") }

    @Test func everyF16PatternWidensAsTorchDoes() { widen(.f16, expected: "f16_to_f32") }

    func narrow(_ dtype: DType, expected: String) {
        let samples = Self.float32("f32_samples")
        #expect(samples.count > 100_000)
        let reference = Self.bits16(expected)
        let narrowed = HostTensor(floats: samples, shape: [samples.count], dtype: dtype)
        let ours = narrowed.bytes.withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
        let exponentMask: UInt16 = dtype == .bf16 ? 0x7F80 : 0x7C00
        var mismatches = 0
        for index in 0..<samples.count {
            if samples[index].isNaN {
                let isNaN = ours[index] & exponentMask == exponentMask && ours[index] & ~(exponentMask | 0x8000) != 0
                if !isNaN { mismatches += 1 }
            } else if ours[index] != reference[index] {
                mismatches += 1
            }
        }
        #expect(mismatches == 0, "\(mismatches) of \(samples.count) samples round differently from torch to \(dtype)")
    }

    @Test func f32SamplesRoundToBF16AsTorchDoes() { narrow(.bf16, expected: "f32_to_bf16") }

    @Test func f32SamplesRoundToF16AsTorchDoes() { narrow(.f16, expected: "f32_to_f16") }

    /// Buffers above the parallel threshold are split across threads; the result must not change.
    @Test func largeBuffersConvertLikeSmallOnes() {
        let samples = Self.float32("f32_samples")
        let large = Array(samples.prefix(400_000)) + Array(samples.prefix(400_000)) + Array(samples.prefix(400_000))
        let whole = HostTensor(floats: large, shape: [large.count], dtype: .bf16)
        let piece = HostTensor(floats: Array(large.prefix(1000)), shape: [1000], dtype: .bf16)
        #expect(Array(whole.bytes.prefix(2000)) == piece.bytes)
        let back = whole.floats()
        #expect(back.count == large.count)
        #expect(HostTensor(floats: back, shape: [back.count], dtype: .bf16).bytes == whole.bytes)
    }
}
