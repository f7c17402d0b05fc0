import Foundation
import Testing
@testable import PeftPack

/// MLX bases in mlx's float modes (`mlx_lm.convert -q --q-mode mxfp4 | mxfp8 | nvfp4`) against
/// fixturegen/mlx_quantized.py: mx.dequantize of every stored weight and of every code with every
/// scale byte, mx.quantize of off-grid and boundary values, and mx.quantize of the exact fp32
/// merge of mlx_lora into the mxfp4 model. Every comparison is bit for bit: both sides compute
/// the same correctly rounded operations. tests/python/check_mlx_quantized.py loads the merges
/// with mlx-lm.
@Suite struct MLXFloatQuantizedBaseTests {
    static let modes: [MLXQuantization.Mode] = [.mxfp4, .mxfp8, .nvfp4]
    static let mxfp4 = Fixtures.path("mlx_quantized/mxfp4/model")

    static func reference(_ variant: String) throws -> SafetensorsFile {
        try SafetensorsFile(path: Fixtures.path("mlx_quantized/\(variant)/\(variant).ref.safetensors"))
    }

    static func pack(base: String = mxfp4) throws -> String {
        let output = Fixtures.temporaryDirectory() + "/lora.peftpack"
        _ = try PackImport.run(sources: [.init(path: Fixtures.path("mlx_adapters/mlx_lora/adapter"), name: nil)], output: output,
                               baseFolder: base, level: 3)
        return output
    }

    static func merge(_ pack: String, base: String = mxfp4, weight: Double = 1, options: Merge.Options) throws -> (String, Merge.Report) {
        let output = Fixtures.temporaryDirectory() + "/merged"
        let report = try Merge.run(base: base, inputs: [MergeInput(pack: pack, adapter: nil, weight: weight)], output: output, options: options)
        return (output, report)
    }

    /// Equal bit patterns, or both NaN (mlx's NaN payloads are not part of its contract).
    static func sameBits(_ a: [Float], _ b: [Float]) -> Int {
        zip(a, b).filter { $0.bitPattern != $1.bitPattern && !($0.isNaN && $1.isNaN) }.count
    }

    @Test(arguments: modes)
    func everyQuantizedWeightReadsAsMXDequantizeGivesIt(mode: MLXQuantization.Mode) throws {
        let checkpoint = try Checkpoint(path: Fixtures.path("mlx_quantized/\(mode.rawValue)/model"))
        let reference = try Self.reference(mode.rawValue)
        let weights = reference.names.filter { $0.hasSuffix(".weight") && !$0.contains("quantize") && !$0.hasPrefix("d") && !$0.hasPrefix("exact") }
        #expect(weights.count == 16)
        #expect(Set(checkpoint.decoded?.decodedNames ?? []) == Set(weights))
        for name in weights {
            let expected = try reference.tensor(name)
            let read = (try checkpoint.tensor(name) as HostTensor)
            #expect(read.dtype == .bf16 && expected.dtype == .bf16 && read.shape == expected.shape, "\(name)")
            #expect(read.bytes == expected.bytes, "\(name)")
            #expect(checkpoint.quantizedTypeName(name) == mode.rawValue)
        }
        #expect(!checkpoint.names.contains { $0.hasSuffix(".scales") })
    }

    /// All 16 (or 256) codes under all 256 scale bytes — E8M0 0 (2^-127) to 255 (2^128, infinite),
    /// E4M3 scales with their NaN — into bf16, fp16 (where 2^-25 and below flush to 0 and 2^16 and
    /// above overflow) and fp32.
    @Test(arguments: modes)
    func everyCodeWithEveryScaleDequantizesAsMLXDoes(mode: MLXQuantization.Mode) throws {
        let reference = try Self.reference(mode.rawValue)
        let codes = try reference.tensor("dequantize_all.weight").bytes, scales = try reference.tensor("dequantize_all.scales").bytes
        for (name, dtype) in [("bfloat16", DType.bf16), ("float16", .f16), ("float32", .f32)] {
            let expected = try reference.tensor("dequantize_all." + name).floats()
            var ours = [Float](repeating: 0, count: expected.count)
            codes.withUnsafeBytes { c in scales.withUnsafeBytes { s in ours.withUnsafeMutableBufferPointer {
                FloatBlockQuantizer.dequantize(codes: c, scales: s, mode: mode, dtype: dtype, elements: 0..<expected.count, into: $0)
            } } }
            #expect(Self.sameBits(ours, expected) == 0, "\(mode) into \(name)")
        }
    }

    /// The codes and scales of mx.quantize: each layer's weight moved off its grid (fp32, and cast
    /// to bf16, which mlx computes in bf16), and the boundary rows (ties, maxima at and past 6·2^n
    /// or 448·2^n, zero and tiny groups).
    @Test(arguments: modes)
    func quantizingGivesMXQuantizeBytes(mode: MLXQuantization.Mode) throws {
        let checkpoint = try Checkpoint(path: Fixtures.path("mlx_quantized/\(mode.rawValue)/model"))
        let weights = try #require(checkpoint.decoded as? MLXQuantizedWeights)
        let reference = try Self.reference(mode.rawValue)
        for name in weights.decodedNames {
            let module = String(name.dropLast(".weight".count))
            let quantized = try #require(weights.quantized(name, values: try reference.tensor("quantize_input." + module).floats()))
            #expect(quantized.codes == (try reference.tensor("quantize.\(module).weight")).bytes, "\(module)")
            #expect(quantized.scales == (try reference.tensor("quantize.\(module).scales")).bytes, "\(module)")
            #expect(quantized.biases == nil)
            let bf16 = try reference.tensor("quantize_input." + module).floats().map { AffineQuantizer.rounded($0, to: .bf16) }
            let fromBF16 = bf16.withUnsafeBufferPointer { FloatBlockQuantizer.quantize($0, mode: mode, dtype: .bf16) }
            #expect(fromBF16.codes == (try reference.tensor("quantize_bf16.\(module).weight")).bytes, "\(module) from bf16")
            #expect(fromBF16.scales == (try reference.tensor("quantize_bf16.\(module).scales")).bytes, "\(module) from bf16")
        }
        let edges = try reference.tensor("quantize_input.edges").floats()
        let quantized = edges.withUnsafeBufferPointer { FloatBlockQuantizer.quantize($0, mode: mode) }
        #expect(quantized.codes == (try reference.tensor("quantize.edges.weight")).bytes)
        #expect(quantized.scales == (try reference.tensor("quantize.edges.scales")).bytes)
    }

    /// Negative controls: the rules the bytes depend on, each changed to its plausible other
    /// reading, fail on the fixture — mlx 0.32.1's block exponent rint(log2 s) without the
    /// rounding up, and E2M1 ties to the even code (mlx's fused CPU quantize-dequantize rule)
    /// instead of argmin's lower code.
    @Test func theFixtureTellsTheRoundingRulesApart() throws {
        let reference = try Self.reference("mxfp4")
        let edges = try reference.tensor("quantize_input.edges").floats()
        let expectedScales = try reference.tensor("quantize.edges.scales").bytes
        var nearestScales = [UInt8]()
        for group in 0..<(edges.count / 32) {
            let target = edges[(group * 32)..<((group + 1) * 32)].map(abs).max()! / 6
            nearestScales.append(target == 0 ? 127 : UInt8(Int(log2(target).rounded(.toNearestOrEven)) + 127))
        }
        let differentScales = zip(nearestScales, expectedScales).filter { $0 != $1 }.count
        #expect(differentScales > 0, "rint(log2 s) gives the same scales")
        let ours = edges.withUnsafeBufferPointer { FloatBlockQuantizer.quantize($0, mode: .mxfp4) }
        #expect(ours.scales == expectedScales)
        // Ties to the even code: 0.25 → 0.5 (code 1) rather than 0, 0.75 → 1 rather than 0.5, …
        func tiesToEven(_ value: Float) -> UInt8 {
            let code = FloatBlockQuantizer.nearestE2M1(value)
            let magnitude = abs(value), sign = code & 8
            for (low, high) in [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7)] as [(UInt8, UInt8)]
            where magnitude == (FloatBlockQuantizer.e2m1[Int(low)] + FloatBlockQuantizer.e2m1[Int(high)]) / 2 {
                return (low % 2 == 0 ? low : high) | (value.sign == .minus ? 8 : 0)
            }
            return code | sign
        }
        var moved = 0
        for group in 0..<(edges.count / 32) {
            let divisor = FloatBlockQuantizer.decodedScale(expectedScales[group], mode: .mxfp4)
            for index in (group * 32)..<((group + 1) * 32) {
                let value = edges[index] / divisor
                if tiesToEven(value) != FloatBlockQuantizer.nearestE2M1(value) { moved += 1 }
            }
        }
        #expect(moved > 0, "the edges hold no E2M1 tie")
    }

    /// `--dtype same` on the mxfp4 model: each merged weight is mx.quantize(mode mxfp4) of the exact
    /// fp32 merge, codes and scales bit for bit; every other tensor and config.json byte for byte.
    @Test func sameRequantizesAsMXQuantizeOfTheExactMerge() throws {
        let (output, report) = try Self.merge(try Self.pack(), options: Merge.Options(keepsQuantization: true))
        let written = try Checkpoint(storedAt: output), base = try Checkpoint(storedAt: Self.mxfp4)
        let reference = try Self.reference("mxfp4")
        let replaced = reference.names.filter { $0.hasPrefix("exact_quantized.") }
        #expect(replaced.count == 6)
        for name in replaced {
            let stored = String(name.dropFirst("exact_quantized.".count))
            #expect((try written.tensor(stored) as HostTensor).bytes == (try reference.tensor(name)).bytes, "\(stored)")
        }
        let touched = Set(replaced.map { String($0.dropFirst("exact_quantized.".count)) })
        #expect(Set(written.storedNames) == Set(base.storedNames))
        for name in base.storedNames where !touched.contains(name) {
            #expect((try written.tensor(name) as HostTensor).bytes == (try base.tensor(name) as HostTensor).bytes, "\(name)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: output + "/config.json")) == Data(contentsOf: URL(fileURLWithPath: Self.mxfp4 + "/config.json")))
        #expect((report.requantized ?? []).map(\.type) == ["mxfp4", "mxfp4", "mxfp4"])
    }

    /// The survival figures of the mxfp4 merge equal numpy's fp64 figures (survival.json) within
    /// 1e-7: the merge's fp32 values are its fp64 fold rounded once, numpy's the fp32 sum, which
    /// differ by an ulp here and there (the affine test's tolerance and reason).
    @Test func survivalFiguresMatchThePythonOnes() throws {
        let (_, report) = try Self.merge(try Self.pack(), options: Merge.Options(keepsQuantization: true))
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Fixtures.path("mlx_quantized/mxfp4/survival.json")))) as! [String: [String: Double]]
        let measured = try #require(report.requantized)
        #expect(measured.map(\.tensor) == json.keys.sorted())
        for figures in measured {
            let expected = json[figures.tensor]!
            for (key, ours) in [("norm_ratio", figures.normRatio), ("cosine", figures.cosine), ("survival", figures.survival),
                                ("unchanged_share", figures.unchangedCodeShare)] {
                #expect(abs(ours - expected[key]!) <= 1e-7, "\(figures.tensor) \(key): \(ours) vs \(expected[key]!)")
            }
        }
    }

    /// The default merge of an mxfp4 base: a plain bf16 model, each merged weight the exact merge
    /// of the dequantized base rounded once; verify --merged passes it and the --dtype same output,
    /// and fails both merged at weight 1.05.
    @Test func theDefaultMergeIsTheExactMergeRoundedOnceAndVerifies() throws {
        let pack = try Self.pack()
        let (output, _) = try Self.merge(pack, options: Merge.Options())
        let merged = try Checkpoint(path: output)
        #expect(merged.decoded == nil && !merged.storedNames.contains { $0.hasSuffix(".scales") })
        let reference = try Self.reference("mxfp4")
        for name in reference.names where name.hasPrefix("delta.") {
            let weight = String(name.dropFirst("delta.".count))
            let exact = zip(try reference.tensor(weight).floats(), try MLXQuantizedBaseTests.exactDelta(weight)).map { Double($0) + $1 }
            let expected = HostTensor(correctlyRounding: exact, shape: (try merged.tensor(weight) as HostTensor).shape, dtype: .bf16)
            #expect((try merged.tensor(weight) as HostTensor).bytes == expected.bytes, "\(weight)")
        }
        for keepsQuantization in [false, true] {
            for (weight, passes) in [(1.0, true), (1.05, false)] {
                let (folder, _) = try Self.merge(pack, weight: weight, options: Merge.Options(keepsQuantization: keepsQuantization))
                let verify = try Verify.run(pack: pack, base: Self.mxfp4, adapterNames: [], targets: [.merged(folder: folder)], inputShape: (2, 16), seed: 0)
                #expect(verify.comparisons[0].passed == passes, "keepsQuantization \(keepsQuantization), weight \(weight)")
            }
        }
    }
}

extension MLXFloatQuantizedBaseTests {
    /// mlx_lm.fuse into the mxfp4 model quantizes bf16(bf16(W) + bf16(ΔW)) with mx.quantize on bf16
    /// input (every step of mlx's graph rounded to bf16): FloatBlockQuantizer given that sum and
    /// dtype bf16 gives fuse's bytes exactly, so `--dtype same` differs from fuse only by fuse's
    /// input roundings and bf16 arithmetic; the codes they move are few (measured 138 of 14,336).
    @Test func fuseQuantizesTheBF16SumInBF16() throws {
        let (output, _) = try Self.merge(try Self.pack(), options: Merge.Options(keepsQuantization: true))
        let ours = try Checkpoint(storedAt: output), fused = try Checkpoint(storedAt: Fixtures.path("mlx_quantized/mxfp4/fused"))
        let reference = try Self.reference("mxfp4")
        var moved = 0, total = 0
        for name in reference.names where name.hasPrefix("delta.") {
            let weight = String(name.dropFirst("delta.".count)), module = String(weight.dropLast(".weight".count))
            let bf16Sum = zip(try reference.tensor(weight).floats(), try reference.tensor(name).floats()).map {
                AffineQuantizer.rounded($0 + AffineQuantizer.rounded($1, to: .bf16), to: .bf16)
            }
            let quantized = bf16Sum.withUnsafeBufferPointer { FloatBlockQuantizer.quantize($0, mode: .mxfp4, dtype: .bf16) }
            #expect(quantized.codes == (try fused.tensor(weight) as HostTensor).bytes, "\(weight)")
            #expect(quantized.scales == (try fused.tensor(module + ".scales") as HostTensor).bytes, "\(module)")
            let (oursCodes, fuseCodes) = ((try ours.tensor(weight) as HostTensor).bytes, quantized.codes)
            oursCodes.withUnsafeBytes { a in
                fuseCodes.withUnsafeBytes { b in
                    for element in 0..<(oursCodes.count * 2) where AffineQuantizer.code(a, at: element, bits: 4) != AffineQuantizer.code(b, at: element, bits: 4) {
                        moved += 1
                    }
                }
            }
            total += oursCodes.count * 2
        }
        #expect(moved > 0 && Double(moved) < 0.02 * Double(total), "\(moved) of \(total) codes moved")
    }
}

extension MLXFloatQuantizedBaseTests {
    /// `--promote bf16` below survival 0.9 promotes mxfp4's layer-1 down_proj (survival 0.81): a
    /// dense bf16 weight, the exact merge rounded once, without scales, marked false in config.json.
    @Test func aPromotedLayerIsWrittenDenseAndMarkedUnquantized() throws {
        let (output, report) = try Self.merge(try Self.pack(), options: Merge.Options(keepsQuantization: true, minSurvival: 0.9,
                                                                                         promotion: Promotion(precision: .bf16, allMerged: false)))
        let weight = "model.layers.1.mlp.down_proj.weight"
        #expect((report.requantized ?? []).filter { $0.promotedTo != nil }.map(\.tensor) == [weight])
        let written = try Checkpoint(storedAt: output)
        #expect(written.info(weight)?.dtype == .bf16 && written.info("model.layers.1.mlp.down_proj.scales") == nil)
        let exact = zip(try Self.reference("mxfp4").tensor(weight).floats(), try MLXQuantizedBaseTests.exactDelta(weight)).map { Double($0) + $1 }
        #expect((try written.tensor(weight) as HostTensor).bytes == HostTensor(correctlyRounding: exact, shape: [64, 128], dtype: .bf16).bytes)
        let quantization = try #require(try MLXQuantization(configText: String(contentsOfFile: output + "/config.json", encoding: .utf8), file: "config.json"))
        #expect(quantization.parameters(ofModule: "model.layers.1.mlp.down_proj") == nil)
        #expect(quantization.parameters(ofModule: "model.layers.1.self_attn.q_proj")?.mode == .mxfp4)
    }
}
