import CDTypeKernels
import Foundation
import Testing
@testable import PeftPack

/// The fused merge kernel (base + fp64 delta, rounded once) against rounding done the plain way:
/// for every output element, the nearest representable value of the fp64 sum, ties to even,
/// found by comparing neighbours. Covers every base/output dtype pair, exact ties, deltas that
/// vanish in rounding, near ties that expose double rounding through fp32, and lengths that exercise the scalar tail after the 8-wide loop.
@Suite struct MergeKernelTests {
    struct Generator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E3779B97F4A7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
            z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
            return z ^ (z >> 31)
        }
    }

    static func value(_ bits: UInt32, _ dtype: DType) -> Double {
        switch dtype {
        case .bf16: Double(Float(bitPattern: bits << 16))
        case .f16: Double(Float16(bitPattern: UInt16(bits)))
        default: Double(Float(bitPattern: bits))
        }
    }

    /// Nearest finite value of `dtype` to `x`, ties to the even bit pattern, by comparing the
    /// candidates around a first guess.
    static func nearest(_ x: Double, _ dtype: DType) -> UInt32 {
        let guess: Int64
        switch dtype {
        case .bf16: guess = Int64(Float(x).bitPattern >> 16)
        case .f16: guess = Int64(Float16(Float(x)).bitPattern)
        default: guess = Int64(Float(x).bitPattern)
        }
        let sign: Int64 = dtype == .f32 ? 0x8000_0000 : 0x8000
        var candidates: [UInt32] = []
        for offset: Int64 in -2...2 {
            let bits = guess + offset
            if bits >= 0 && bits < 2 * sign && value(UInt32(bits), dtype).isFinite { candidates.append(UInt32(bits)) }
        }
        return candidates.min { a, b in
            let (da, db) = (abs(value(a, dtype) - x), abs(value(b, dtype) - x))
            return da != db ? da < db : a & 1 == 0
        }!
    }

    static func run(base: DType, out: DType, count: Int, seed: UInt64) {
        var random = Generator(state: seed)
        let baseValues: [Double] = (0..<count).map { _ in
            let magnitude = Double.random(in: -3...3, using: &random)
            return Self.value(nearest(magnitude * pow(2, Double(Int.random(in: -6...6, using: &random))), base), base)
        }
        var deltas: [Double] = baseValues.enumerated().map { index, w in
            switch index % 5 {
            case 0: return 0
            case 1: return w * Double.random(in: -1e-4...1e-4, using: &random)   // mostly lost to rounding
            case 2: return w * Double.random(in: -0.1...0.1, using: &random)
            default: return Double.random(in: -0.05...0.05, using: &random)
            }
        }
        // Exact ties: half an output ulp above the base value.
        for index in stride(from: 3, to: count, by: 7) {
            let bits = nearest(baseValues[index], out)
            let next = value(bits + 1, out)
            if next.isFinite { deltas[index] = (next - value(bits, out)) / 2 + (value(bits, out) - baseValues[index]) }
        }
        // Near ties: a hair (far below fp32 resolution) to either side of a midpoint, where
        // rounding through fp32 to nearest would land on the midpoint and then go to even.
        for index in stride(from: 5, to: count, by: 11) {
            let bits = nearest(baseValues[index], out)
            let (low, high) = (value(bits, out), value(bits + 1, out))
            guard high.isFinite else { continue }
            let midpoint = (low + high) / 2
            let hair = abs(midpoint) * 1e-12 * (index % 2 == 0 ? 1 : -1)
            deltas[index] = midpoint + hair - baseValues[index]
        }
        let baseTensor = HostTensor(correctlyRounding: baseValues, shape: [count], dtype: base)
        var output = [UInt8](repeating: 0, count: count * out.byteSize)
        var stats = peftpack_merge_stats()
        baseTensor.bytes.withUnsafeBytes { baseBytes in
            output.withUnsafeMutableBytes { outBytes in
                peftpack_merge_add(LowRankMerge.elementType(base)!, baseBytes.baseAddress!, deltas, LowRankMerge.elementType(out)!,
                                   outBytes.baseAddress!, count, &stats)
            }
        }
        var mismatches = 0, changed = 0, lost = 0
        for index in 0..<count {
            let produced: UInt32 = out == .f32
                ? output.withUnsafeBytes { $0.load(fromByteOffset: 4 * index, as: UInt32.self) }
                : UInt32(output.withUnsafeBytes { $0.load(fromByteOffset: 2 * index, as: UInt16.self) })
            if produced != nearest(baseValues[index] + deltas[index], out) { mismatches += 1 }
            if deltas[index] != 0 {
                changed += 1
                if produced == nearest(baseValues[index], out) { lost += 1 }
            }
        }
        #expect(mismatches == 0, "\(base.rawValue) → \(out.rawValue): \(mismatches) of \(count) not correctly rounded")
        #expect(Int(stats.changed) == changed)
        #expect(Int(stats.lost) == lost)
        #expect(lost > 0 && lost < changed)
        #expect(stats.max_abs_delta == deltas.map(abs).max())
    }

    @Test(arguments: [DType.bf16, .f16, .f32], [DType.bf16, .f16, .f32])
    func correctlyRoundedAgainstNeighbourSearch(base: DType, out: DType) {
        for (count, seed) in [(4099, UInt64(1)), (7, 2), (65_536, 3)] {
            Self.run(base: base, out: out, count: count, seed: seed)
        }
    }
}
