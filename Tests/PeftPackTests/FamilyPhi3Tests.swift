import Foundation
import Testing
@testable import PeftPack

/// Phi-3 (fixtures/data/families/phi3, made with transformers 5.24 and PEFT 0.21.2): fused
/// qkv_proj and gate_up_proj, LongRoPE whose long factors the length-7 reference input selects,
/// cos/sin scaled by √3, partial rotary 0.75, sliding window 4. What is Phi-3's own: its config
/// reading, the short-factor input, the fused tensors in GGUF, and negative controls; the runtime,
/// merge and extract of every case run in FamilyFixtureTests.
///
/// Tolerance: 1e-5 of the reference's largest magnitude, as RuntimeReferenceTests (fp32 on both
/// sides, different summation order; observed ≤ 1e-6 relative). The negative controls switch each
/// Phi-3 feature off in our runtime and must move the output past 1e-3 relative, so a runtime that
/// ignored one could not pass the comparisons.
@Suite struct FamilyPhi3Tests {
    static let tolerance = Verify.Tolerance(absolute: 0, relative: 1e-5)
    static let root = "families/phi3"
    static let base = Fixtures.path("\(root)/model")
    static let finetuned = Fixtures.path("\(root)/model-ft")

    static func reference(_ caseName: String) -> String { Fixtures.path("\(root)/cases/\(caseName)/\(caseName).ref.safetensors") }

    static func pack(_ caseName: String) throws -> String {
        let output = Fixtures.temporaryDirectory() + "/\(caseName).peftpack"
        _ = try PackImport.run(sources: [.init(path: Fixtures.path("\(root)/cases/\(caseName)/adapter"), name: nil)], output: output,
                               baseFolder: base, level: 3)
        return output
    }

    static func model(config edit: (inout ModelConfig) -> Void = { _ in }) throws -> TransformerModel {
        var config = try ModelConfig.load(contentsOf: URL(fileURLWithPath: base + "/config.json"))
        edit(&config)
        return try TransformerModel.load(config: config, weights: try Checkpoint(path: base))
    }

    static func relativeError(_ model: TransformerModel, _ referencePath: String, _ key: String) throws -> Double {
        let file = try ReferenceFile(path: referencePath)
        let output = try model.forward(inputIds: try file.inputRows())
        return RuntimeFixtures.relativeError(output, try file.output(key))
    }

    @Test func configReadsLongRopeAsPhi3ConfigDoes() throws {
        let config = try ModelConfig.load(contentsOf: URL(fileURLWithPath: Self.base + "/config.json"))
        #expect(config.family.modelType == "phi3")
        let rope = try #require(config.rope)
        #expect(rope.type == .longrope && rope.originalMaxPositionEmbeddings == 4 && rope.partialRotaryFactor == 0.75)
        #expect(rope.shortFactor == [1.1, 1.4, 2.0, 3.5, 6.0, 9.0] && rope.longFactor == [1.3, 2.5, 4.5, 8.0, 15.0, 27.0])
        #expect(config.slidingWindow == 4 && config.slidingWindowLayers == [0, 1] && !config.tieWordEmbeddings)
        // transformers' Phi3RotaryEmbedding on the fixture base (inv_freq after a forward of that
        // length, attention_scaling): length 4 runs on short_factor, length 7 on long_factor.
        let expected: [Int: [Double]] = [
            4: [0.9090908765792847, 0.15388818085193634, 0.02320794202387333, 0.0028571428265422583,
                0.0003590723790694028, 5.157322084414773e-05],
            7: [0.7692307829856873, 0.08617737889289856, 0.0103146405890584, 0.0012499999720603228,
                0.00014362896035891026, 1.7191072402056307e-05],
        ]
        for (length, frequencies) in expected {
            let (inverse, scaling) = rope.inverseFrequencies(headDim: 16, maxPositionEmbeddings: 64, sequenceLength: length)
            #expect(inverse.count == 6)
            for (actual, wanted) in zip(inverse, frequencies) {
                #expect(abs(Double(actual) - wanted) <= 1e-6 * wanted, "length \(length): \(actual) vs \(wanted)")
            }
            #expect(abs(Double(scaling) - 3.0.squareRoot()) <= 1e-7)
        }
    }

    /// 4.x spellings and Phi3Config's rules: `rope_scaling` with `type`, a top-level
    /// partial_rotary_factor, the top-level original_max_position_embeddings winning over the
    /// dictionary's (4096 when absent), "yarn" read as longrope, other types and "su" refused.
    @Test func configSpellingsAndRefusals() throws {
        let factors = #""short_factor": [1, 1, 1, 1], "long_factor": [2, 2, 2, 2]"#
        func decode(_ fields: String) throws -> ModelConfig {
            let head = #"{"model_type": "phi3", "hidden_size": 64, "num_attention_heads": 4, "max_position_embeddings": 64, "#
            return try ModelConfig.decode(Data((head + fields + "}").utf8))
        }
        let old = try #require(try decode(#""partial_rotary_factor": 0.5, "original_max_position_embeddings": 8, "rope_scaling": {"type": "longrope", \#(factors)}"#).rope)
        #expect(old.type == .longrope && old.partialRotaryFactor == 0.5 && old.originalMaxPositionEmbeddings == 8)
        let inner = try #require(try decode(#""partial_rotary_factor": 0.5, "rope_parameters": {"rope_type": "longrope", "original_max_position_embeddings": 8, \#(factors)}"#).rope)
        #expect(inner.originalMaxPositionEmbeddings == 4096)
        let yarn = try #require(try decode(#""partial_rotary_factor": 0.5, "rope_scaling": {"type": "yarn", "factor": 2.0, \#(factors)}"#).rope)
        #expect(yarn.type == .longrope)
        let plain = try #require(try decode(#""rope_scaling": null, "rope_theta": 500.0"#).rope)
        #expect(plain.type == .standard && plain.theta == 500)

        func refusal(_ fields: String) -> String? {
            do { _ = try decode(fields); return nil } catch { return "\(error)" }
        }
        #expect(refusal(#""rope_scaling": {"type": "linear", "factor": 2.0}"#)?.contains("Phi3Config accepts") == true)
        #expect(refusal(#""rope_scaling": {"type": "su", \#(factors)}"#)?.contains("su") == true)
        #expect(refusal(#""rope_scaling": {"type": "longrope", "short_factor": [1, 1, 1], "long_factor": [2, 2, 2]}"#)?
            .contains("short_factor has 3 entries") == true)
        #expect(refusal(#""partial_rotary_factor": 0.5, "rope_scaling": {"type": "longrope", "short_factor": [1, 0, 1, 1], "long_factor": [2, 2, 2, 2]}"#)?
            .contains("positive") == true)
        #expect(refusal(#""rope_scaling": {"type": "longrope", "short_factor": [1, 1, 1, 1, 1, 1, 1, 1]}"#)?.contains("long_factor") == true)
    }

    /// LongRoPE is not Phi-3's alone: LlamaRotaryEmbedding runs it too, the original context
    /// defaulting to max_position_embeddings (no top-level field in LlamaConfig). Expected values:
    /// transformers 5.24's LlamaRotaryEmbedding inv_freq after a forward of length 6 and 7
    /// (attention_scaling 1: the factor is 1).
    @Test func longRopeOnLlamaReadsAsLlamaConfigDoes() throws {
        let config = try ModelConfig.decode(Data(#"""
            {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "max_position_embeddings": 6,
             "rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0,
                                 "short_factor": [1, 2, 3, 4, 5, 6, 7, 8], "long_factor": [2, 3, 4, 5, 6, 7, 8, 9]}}
            """#.utf8))
        let rope = try #require(config.rope)
        #expect(rope.originalMaxPositionEmbeddings == 6)
        let expected: [Int: [Double]] = [
            6: [1.0, 0.15811388194561005, 0.03333333507180214, 0.007905694656074047, 0.0020000000949949026,
                0.0005270463298074901, 0.0001428571413271129, 3.9528473280370235e-05],
            7: [0.5, 0.10540924966335297, 0.02500000037252903, 0.006324555724859238, 0.0016666667070239782,
                0.00045175396371632814, 0.0001250000059371814, 3.513641786412336e-05],
        ]
        for (length, frequencies) in expected {
            let (inverse, scaling) = rope.inverseFrequencies(headDim: 16, maxPositionEmbeddings: 6, sequenceLength: length)
            for (actual, wanted) in zip(inverse, frequencies) {
                #expect(abs(Double(actual) - wanted) <= 1e-6 * wanted, "length \(length): \(actual) vs \(wanted)")
            }
            #expect(scaling == 1)
        }
    }

    /// Llama's transformers code fails on a partial rotary factor; the runtime refuses it there
    /// and runs it only where the family's attention rotates part of each head.
    @Test func partialRotaryOnlyWherePhi3Allows() throws {
        var config = try ModelConfig.load(contentsOf: URL(fileURLWithPath: Fixtures.path("models/llama-tiny/config.json")))
        config.rope?.partialRotaryFactor = 0.5
        let refusal = #expect(throws: RuntimeError.self) {
            _ = try TransformerModel.load(config: config, weights: try Checkpoint(path: Fixtures.path("models/llama-tiny")))
        }
        #expect(refusal.map { "\($0)" }?.contains("partial_rotary_factor 0.5 is not supported for llama") == true)
    }

    /// The length-7 input (long_factor), the length-4 one (short_factor) and the fine-tune.
    @Test func baseOutputs() throws {
        let model = try Self.model()
        #expect(model.unusedWeights.isEmpty)
        let long = try Self.relativeError(model, Self.reference("phi3_lora"), "output_base")
        let short = try Self.relativeError(model, Fixtures.path("\(Self.root)/short-input.ref.safetensors"), "output_base")
        let (finetuned, _) = try Verify.loadModel(Self.finetuned)
        let tuned = try Self.relativeError(finetuned, Self.finetuned + ".ref.safetensors", "output_adapter")
        print("phi3 base: long_factor input \(long), short_factor input \(short), fine-tune \(tuned)")
        #expect(long <= 1e-5 && short <= 1e-5 && tuned <= 1e-5)
    }

    /// Each feature switched off in our runtime moves its output away from transformers'.
    @Test(arguments: ["longrope", "long factor", "cos/sin scale", "partial rotary", "sliding window"])
    func featureControls(feature: String) throws {
        let padded = { (factors: [Double]) in factors + [Double](repeating: factors.last!, count: 8 - factors.count) }
        let model = try Self.model { config in
            var rope = config.rope!
            switch feature {
            case "longrope": rope.type = .standard
            case "long factor": rope.longFactor = rope.shortFactor
            case "cos/sin scale": rope.attentionFactor = 1
            case "partial rotary":
                rope.partialRotaryFactor = 1
                (rope.shortFactor, rope.longFactor) = (padded(rope.shortFactor!), padded(rope.longFactor!))
            default: config.slidingWindow = nil
            }
            config.rope = rope
        }
        let moved = try Self.relativeError(model, Self.reference("phi3_lora"), "output_base")
        print("phi3 without \(feature): \(moved) from transformers")
        #expect(moved > 1e-3)
    }

    /// llama.cpp keeps Phi-3's fusions (gguf-py maps qkv_proj to attn_qkv and gate_up_proj to
    /// ffn_up) and permutes no rows (conversion/phi.py has no modify_tensors): the file names the
    /// fused tensors, and imported back with the base it still gives PEFT's output.
    /// check_gguf_exports.py compares the file with PEFT's ΔW and llama.cpp's own converter.
    @Test func ggufKeepsTheFusedTensors() throws {
        let gguf = Fixtures.temporaryDirectory() + "/phi3.gguf"
        let export = try CLI.run(["export", try Self.pack("phi3_lora"), "-o", gguf, "--format", "gguf"])
        try #require(export.status == 0, "\(export.stderr)")
        let file = try GGUF.File(path: gguf)
        #expect(file.value("general.architecture")?.stringValue == "phi3")
        let expected = (0..<2).flatMap { layer in
            ["attn_qkv", "attn_output", "ffn_up", "ffn_down"].flatMap { ["blk.\(layer).\($0).weight.lora_a", "blk.\(layer).\($0).weight.lora_b"] }
        }
        #expect(Set(file.tensors.map(\.name)) == Set(expected))
        let qkv = try #require(file.tensors.first { $0.name == "blk.0.attn_qkv.weight.lora_b" })
        #expect(qkv.shape == [128, 4])  // PEFT's B: rows q|k|v = 64 + 32 + 32, rank_pattern qkv_proj 4
        let back = Fixtures.temporaryDirectory() + "/back.peftpack"
        let imported = try CLI.run(["import", gguf, "--base", Self.base, "-o", back, "--quiet"])
        try #require(imported.status == 0, "\(imported.stderr)")
        let report = try Verify.run(pack: back, base: Self.base, adapterNames: [],
                                    targets: [.reference(path: Self.reference("phi3_lora"), key: "output_adapter")],
                                    inputShape: (2, 7), seed: 0, tolerance: Self.tolerance)
        #expect(report.passed, "max rel \(report.comparisons[0].maxRelError)")
    }
}
