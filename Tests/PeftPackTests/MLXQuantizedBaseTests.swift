import Foundation
import Testing
@testable import PeftPack

/// MLX-quantized model folders (`mlx_lm.convert -q`, affine) as bases, against fixturegen/
/// mlx_quantized.py: MLX's own mx.dequantize of every quantized weight, mlx_lm's fuse of the
/// mlx_lora adapter into the 4-bit g64 model, and mx.quantize of the exact fp32 merge.
/// tests/python/check_mlx_quantized.py loads peftpack's merges with mlx-lm.
@Suite struct MLXQuantizedBaseTests {
    static let variants = ["q4_g64", "q8_g32", "q4_g128", "q4_g64_tied", "q2_g64", "q3_g32", "q6_g64", "q4_g64_f16"]
    static let q4 = Fixtures.path("mlx_quantized/q4_g64/model")

    static func reference(_ variant: String) throws -> SafetensorsFile {
        try SafetensorsFile(path: Fixtures.path("mlx_quantized/\(variant)/\(variant).ref.safetensors"))
    }

    static func pack(base: String = q4) throws -> String {
        let output = Fixtures.temporaryDirectory() + "/lora.peftpack"
        _ = try PackImport.run(sources: [.init(path: Fixtures.path("mlx_adapters/mlx_lora/adapter"), name: nil)], output: output,
                               baseFolder: base, level: 3)
        return output
    }

    static func merge(_ pack: String, weight: Double = 1, options: Merge.Options) throws -> (String, Merge.Report) {
        let output = Fixtures.temporaryDirectory() + "/merged"
        let report = try Merge.run(base: q4, inputs: [MergeInput(pack: pack, adapter: nil, weight: weight)], output: output, options: options)
        return (output, report)
    }

    /// scale·(A·B)ᵀ of the mlx_lora adapter's module in fp64 (mlx's lora_a is [in, r], lora_b [r, out]).
    static func exactDelta(_ weight: String) throws -> [Double] {
        let adapter = try SafetensorsFile(path: Fixtures.path("mlx_adapters/mlx_lora/adapter/adapters.safetensors"))
        let module = String(weight.dropLast(".weight".count))
        let a = try adapter.tensor(module + ".lora_a"), b = try adapter.tensor(module + ".lora_b")
        let (inputs, rank, outputs) = (a.shape[0], a.shape[1], b.shape[1])
        let (av, bv) = (a.floats(), b.floats())
        var delta = [Double](repeating: 0, count: outputs * inputs)
        for o in 0..<outputs {
            for i in 0..<inputs {
                var sum = 0.0
                for r in 0..<rank { sum += Double(av[i * rank + r]) * Double(bv[r * outputs + o]) }
                delta[o * inputs + i] = 2.5 * sum
            }
        }
        return delta
    }

    /// Bit for bit: the product and the sum each rounded to the scales' dtype (bf16, fp16 for
    /// q4_g64_f16), as mlx's CPU computes them.
    @Test(arguments: variants)
    func everyQuantizedWeightReadsAsMXDequantizeGivesIt(variant: String) throws {
        let checkpoint = try Checkpoint(path: Fixtures.path("mlx_quantized/\(variant)/model"))
        let reference = try Self.reference(variant)
        let weights = reference.names.filter { $0.hasSuffix(".weight") && !$0.contains("quantize") && !$0.hasPrefix("delta.") }
        #expect(!weights.isEmpty)
        #expect(Set(checkpoint.decoded?.decodedNames ?? []) == Set(weights))
        for name in weights {
            let expected = try reference.tensor(name)
            let read = (try checkpoint.tensor(name) as HostTensor)
            #expect(read.dtype == expected.dtype && read.shape == expected.shape, "\(name)")
            #expect(read.bytes == expected.bytes, "\(name)")
        }
        #expect(!checkpoint.names.contains { $0.hasSuffix(".scales") || $0.hasSuffix(".biases") })
    }

    /// AffineQuantizer gives mx.quantize's codes, scales and biases bit for bit (fp32 input, each
    /// layer's group size and bits).
    @Test(arguments: variants)
    func quantizingGivesMXQuantizeBytes(variant: String) throws {
        let checkpoint = try Checkpoint(path: Fixtures.path("mlx_quantized/\(variant)/model"))
        let weights = try #require(checkpoint.decoded as? MLXQuantizedWeights)
        let reference = try Self.reference(variant)
        for name in weights.decodedNames {
            let module = String(name.dropLast(".weight".count))
            let input = try reference.tensor("quantize_input." + module).floats()
            let quantized = try #require(weights.quantized(name, values: input))
            #expect(quantized.codes == (try reference.tensor("quantize.\(module).weight")).bytes, "\(module)")
            #expect(quantized.scales == (try reference.tensor("quantize.\(module).scales")).bytes, "\(module)")
            #expect(quantized.biases == (try reference.tensor("quantize.\(module).biases")).bytes, "\(module)")
        }
    }

    /// A layer's own entry in `quantization` overrides the defaults; a layer stored dense (no
    /// scales) passes through as stored.
    @Test func perLayerParametersAndDenseLayers() throws {
        let q8 = try Checkpoint(path: Fixtures.path("mlx_quantized/q8_g32/model"))
        #expect(q8.quantizedTypeName("model.layers.0.self_attn.q_proj.weight") == "affine q4 g64")
        #expect(q8.quantizedTypeName("model.layers.0.self_attn.k_proj.weight") == "affine q8 g32")
        let g128 = try Checkpoint(path: Fixtures.path("mlx_quantized/q4_g128/model"))
        #expect(g128.decoded?.decodedNames == ["model.layers.0.mlp.down_proj.weight"])
        #expect(!g128.isQuantized("model.layers.1.mlp.down_proj.weight"))
        #expect(g128.info("model.layers.1.mlp.down_proj.weight")?.shape == [64, 128])
    }

    /// An unquantized MLX model folder (HF names, model.safetensors + its index, metadata format
    /// mlx) is a base like any safetensors folder: imports check against it and merges write it.
    @Test func anUnquantizedMLXFolderIsAPlainBase() throws {
        let folder = Fixtures.path("mlx_quantized/bf16/model")
        let base = try BaseModel(folder: folder)
        #expect(base.checkpoint.decoded == nil && base.checkpoint.info("model.layers.0.self_attn.q_proj.weight")?.dtype == .bf16)
        let pack = try Self.pack(base: folder)
        let output = Fixtures.temporaryDirectory() + "/merged"
        let report = try Merge.run(base: folder, inputs: [MergeInput(pack: pack, adapter: nil, weight: 1)], output: output, options: Merge.Options())
        #expect(report.tensorsTouched == 3)
        let verify = try Verify.run(pack: pack, base: folder, adapterNames: [], targets: [.merged(folder: output)], inputShape: (2, 16), seed: 0)
        #expect(verify.comparisons[0].passed)
    }

    /// The tied model stores no lm_head: the head is the quantized embedding, as embed_tokens.as_linear.
    @Test func aTiedModelIsABaseWithItsQuantizedEmbedding() throws {
        let base = try BaseModel(folder: Fixtures.path("mlx_quantized/q4_g64_tied/model"))
        #expect(base.checkpoint.isQuantized("model.embed_tokens.weight"))
        #expect(!base.checkpoint.names.contains("lm_head.weight"))
        #expect(base.checkpoint.info("model.embed_tokens.weight")?.shape == [256, 64])
    }

    /// `--dtype same`: each merged weight is mx.quantize of the exact fp32 merge with the layer's
    /// group size and bits (scales and biases in bf16), bit for bit; everything else, config.json
    /// included, byte for byte.
    @Test func sameRequantizesAsMXQuantizeOfTheExactMerge() throws {
        let (output, _) = try Self.merge(try Self.pack(), options: Merge.Options(keepsQuantization: true))
        let written = try Checkpoint(storedAt: output), base = try Checkpoint(storedAt: Self.q4)
        let reference = try Self.reference("q4_g64")
        let replaced = reference.names.filter { $0.hasPrefix("exact_quantized.") }
        #expect(replaced.count == 9)
        for name in replaced {
            let stored = String(name.dropFirst("exact_quantized.".count))
            #expect((try written.tensor(stored) as HostTensor).bytes == (try reference.tensor(name)).bytes, "\(stored)")
        }
        let touched = Set(replaced.map { String($0.dropFirst("exact_quantized.".count)) })
        #expect(Set(written.storedNames) == Set(base.storedNames))
        for name in base.storedNames where !touched.contains(name) {
            #expect((try written.tensor(name) as HostTensor).bytes == (try base.tensor(name) as HostTensor).bytes, "\(name)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: output + "/config.json")) == Data(contentsOf: URL(fileURLWithPath: Self.q4 + "/config.json")))
    }

    /// On a partly quantized base a merged dense layer stays dense, the exact merge rounded once to
    /// its dtype; the mlx_lora adapter touches only dense layers of q4_g128, so nothing is requantized.
    @Test func sameKeepsAMergedDenseLayerDense() throws {
        let folder = Fixtures.path("mlx_quantized/q4_g128/model")
        let pack = try Self.pack(base: folder)
        let output = Fixtures.temporaryDirectory() + "/merged"
        let report = try Merge.run(base: folder, inputs: [MergeInput(pack: pack, adapter: nil, weight: 1)], output: output,
                                   options: Merge.Options(keepsQuantization: true))
        #expect(report.requantized == nil)
        let written = try Checkpoint(storedAt: output), base = try Checkpoint(storedAt: folder)
        for weight in ["model.layers.1.mlp.down_proj.weight", "model.layers.1.self_attn.q_proj.weight"] {
            let exact = zip((try base.tensor(weight) as HostTensor).floats(), try Self.exactDelta(weight)).map { Double($0) + $1 }
            let shape = base.info(weight)!.shape
            #expect((try written.tensor(weight) as HostTensor).bytes == HostTensor(correctlyRounding: exact, shape: shape, dtype: .bf16).bytes, "\(weight)")
        }
        #expect((try written.tensor("model.layers.0.mlp.down_proj.weight") as HostTensor).bytes == (try base.tensor("model.layers.0.mlp.down_proj.weight") as HostTensor).bytes)
    }

    /// mlx_lm.fuse quantizes bf16(bf16(W) + bf16(ΔW)) (LoRALinear.fuse adds in the weight's
    /// dtype), not the fp32 merge: AffineQuantizer on that input gives fuse's bytes exactly, so the
    /// only difference from `--dtype same` is the input's two bf16 roundings; the codes they move
    /// are few and by one step.
    @Test func fuseQuantizesTheBF16SumWithTheSameQuantizer() throws {
        let (output, _) = try Self.merge(try Self.pack(), options: Merge.Options(keepsQuantization: true))
        let ours = try Checkpoint(storedAt: output), fused = try Checkpoint(storedAt: Fixtures.path("mlx_quantized/q4_g64/fused"))
        let reference = try Self.reference("q4_g64")
        for name in reference.names where name.hasPrefix("delta.") {
            let weight = String(name.dropFirst("delta.".count)), module = String(weight.dropLast(".weight".count))
            let bf16Sum = zip(try reference.tensor(weight).floats(), try reference.tensor(name).floats()).map {
                AffineQuantizer.rounded($0 + AffineQuantizer.rounded($1, to: .bf16), to: .bf16)
            }
            let quantized = bf16Sum.withUnsafeBufferPointer { AffineQuantizer.quantize($0, dtype: .bf16, groupSize: 64, bits: 4) }
            #expect(quantized.codes == (try fused.tensor(weight) as HostTensor).bytes, "\(weight)")
            #expect(quantized.scales == (try fused.tensor(module + ".scales") as HostTensor).bytes, "\(module)")
            #expect(quantized.biases == (try fused.tensor(module + ".biases") as HostTensor).bytes, "\(module)")
            let (oursCodes, fuseCodes) = ((try ours.tensor(weight) as HostTensor).bytes, quantized.codes)
            var moved = 0, largest: UInt32 = 0
            oursCodes.withUnsafeBytes { a in
                fuseCodes.withUnsafeBytes { b in
                    for element in 0..<(oursCodes.count * 2) {
                        let (x, y) = (AffineQuantizer.code(a, at: element, bits: 4), AffineQuantizer.code(b, at: element, bits: 4))
                        if x != y { moved += 1; largest = max(largest, x > y ? x - y : y - x) }
                    }
                }
            }
            #expect(moved > 0 && Double(moved) < 0.05 * Double(oursCodes.count * 2) && largest == 1, "\(weight): \(moved) codes moved, by up to \(largest)")
        }
    }

    /// The survival figures: QuantizationSurvival's on numpy's tensors (the base dequantized, the
    /// fp32 sum, its mx.quantize read back) equal numpy's fp64 figures to 1e-12 (the sums' order
    /// differs); the merge's own figures are of its fp64-folded fp32 merge, which differs from the
    /// fp32 sum by an ulp here and there: within 1e-7 of them.
    @Test func survivalFiguresMatchThePythonOnes() throws {
        let (_, report) = try Self.merge(try Self.pack(), options: Merge.Options(keepsQuantization: true))
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Fixtures.path("mlx_quantized/q4_g64/survival.json")))) as! [String: [String: Double]]
        let reference = try Self.reference("q4_g64")
        let measured = try #require(report.requantized)
        #expect(measured.map(\.tensor) == json.keys.sorted())
        for figures in measured {
            let module = String(figures.tensor.dropLast(".weight".count))
            let base = try reference.tensor(figures.tensor).floats()
            let merged = zip(base, try reference.tensor("delta." + figures.tensor).floats()).map { $0 + $1 }
            var after = [Float](repeating: 0, count: base.count)
            let (codes, scales, biases) = try ["weight", "scales", "biases"].map { try reference.tensor("exact_quantized.\(module).\($0)").bytes }
                .withUnsafeBufferPointer { ($0[0], $0[1], $0[2]) }
            codes.withUnsafeBytes { c in scales.withUnsafeBytes { s in biases.withUnsafeBytes { b in after.withUnsafeMutableBufferPointer {
                AffineQuantizer.dequantize(codes: c, scales: s, biases: b, dtype: .bf16, groupSize: 64, bits: 4, elements: 0..<base.count, into: $0)
            } } } }
            let numpy = QuantizationSurvival(tensor: figures.tensor, type: "", before: base, merged: merged, after: after,
                                             unchanged: zip(base, after).filter { $0 == $1 }.count)
            let expected = json[figures.tensor]!
            for (key, python, fromNumpy, ours) in [("norm_ratio", expected["norm_ratio"]!, numpy.normRatio, figures.normRatio),
                                                   ("cosine", expected["cosine"]!, numpy.cosine, figures.cosine),
                                                   ("survival", expected["survival"]!, numpy.survival, figures.survival),
                                                   ("unchanged_share", expected["unchanged_share"]!, numpy.unchangedCodeShare, figures.unchangedCodeShare)] {
                #expect(abs(fromNumpy - python) <= 1e-12, "\(figures.tensor) \(key)")
                #expect(abs(ours - python) <= 1e-7, "\(figures.tensor) \(key)")
            }
            #expect(figures.type == "affine q4 g64")
        }
    }

    /// The default merge: a plain model, each merged weight the exact merge of the dequantized base
    /// rounded once to bf16 (the base's scales dtype, what mx.dequantize gives), untouched weights
    /// dequantized, config.json without `quantization` or `quantization_config`.
    @Test func theDefaultMergeIsTheExactMergeRoundedOnceToBF16() throws {
        let (output, _) = try Self.merge(try Self.pack(), options: Merge.Options())
        let merged = try Checkpoint(path: output)
        #expect(merged.decoded == nil && !merged.storedNames.contains { $0.hasSuffix(".scales") })
        let reference = try Self.reference("q4_g64")
        for name in reference.names where name.hasPrefix("delta.") {
            let weight = String(name.dropFirst("delta.".count))
            let exact = zip(try reference.tensor(weight).floats(), try Self.exactDelta(weight)).map { Double($0) + $1 }
            let expected = HostTensor(correctlyRounding: exact, shape: (try merged.tensor(weight) as HostTensor).shape, dtype: .bf16)
            #expect((try merged.tensor(weight) as HostTensor).bytes == expected.bytes, "\(weight)")
        }
        #expect((try merged.tensor("model.layers.0.self_attn.q_proj.weight") as HostTensor).bytes == (try reference.tensor("model.layers.0.self_attn.q_proj.weight")).bytes)
        let config = try String(contentsOfFile: output + "/config.json", encoding: .utf8)
        #expect(!config.contains("quantization") && config.contains("\"model_type\": \"llama\""))
    }

    /// verify --merged reads a kept-quantized output through the requantizing hooks: the merge
    /// passes, the adapter at weight 1.05 fails.
    @Test(arguments: [false, true])
    func verifyPassesTheMergeAndFailsAPerturbedOne(keepsQuantization: Bool) throws {
        let pack = try Self.pack()
        for (weight, passes) in [(1.0, true), (1.05, false)] {
            let (output, _) = try Self.merge(pack, weight: weight, options: Merge.Options(keepsQuantization: keepsQuantization))
            let report = try Verify.run(pack: pack, base: Self.q4, adapterNames: [], targets: [.merged(folder: output)], inputShape: (2, 16), seed: 0)
            #expect(report.comparisons[0].weights?.passed == passes, "weight \(weight)")
            #expect(report.comparisons[0].passed == passes, "weight \(weight)")
        }
    }

    /// Promoted layers are dense bf16 weights without scales or biases (mlx-lm then loads a Linear).
    @Test func promotedLayersAreWrittenDense() throws {
        let (output, report) = try Self.merge(try Self.pack(), options: Merge.Options(keepsQuantization: true, minSurvival: 0.95,
                                                                                         promotion: Promotion(precision: .bf16, allMerged: false)))
        let written = try Checkpoint(storedAt: output)
        let promoted = (report.requantized ?? []).filter { $0.promotedTo != nil }.map(\.tensor)
        #expect(promoted == ["model.layers.1.mlp.down_proj.weight"])
        #expect(written.info("model.layers.1.mlp.down_proj.weight")?.dtype == .bf16)
        #expect(written.info("model.layers.1.mlp.down_proj.weight")?.shape == [64, 128])
        #expect(written.info("model.layers.1.mlp.down_proj.scales") == nil && written.info("model.layers.1.mlp.down_proj.biases") == nil)
        let weight = "model.layers.1.mlp.down_proj.weight"
        let exact = zip(try Self.reference("q4_g64").tensor(weight).floats(), try Self.exactDelta(weight)).map { Double($0) + $1 }
        #expect((try written.tensor(weight) as HostTensor).bytes == HostTensor(correctlyRounding: exact, shape: [64, 128], dtype: .bf16).bytes,
                "a promoted weight is the exact merge rounded once")
        #expect(written.info("model.layers.1.self_attn.q_proj.scales") != nil)
        #expect(throws: InputError.self) {
            try Self.merge(try Self.pack(), options: Merge.Options(keepsQuantization: true, promotion: Promotion(precision: .q8_0, allMerged: true)))
        }
    }
}
