import Foundation
import Testing
@testable import PeftPack

/// Qwen3 (fixtures/data/families/qwen3): Qwen3ForCausalLM with per-head q/k RMSNorm, head_dim 32
/// where hidden / heads is 16, 2 key/value heads and the head tied to the embedding as the small
/// Qwen3 models save it. FamilyFixtureTests runs the cases; this suite pins what is Qwen3's own.
/// Tolerance: 1e-5 relative, as FamilyFixtureTests; a control must move the output by > 1e-3.
@Suite struct FamilyQwen3Tests {
    static let base = FamilyFixtureTests.base("qwen3")
    static let reference = FamilyFixtureTests.reference("qwen3/qwen3_lora")

    @Test func configAndCheckpointAsTransformersSavesThem() throws {
        let model = try FamilyFixtures.model(Self.base)
        let config = model.config
        #expect(config.family == .qwen3 && config.architecture == "Qwen3ForCausalLM")
        #expect(config.headDim == 32 && config.hiddenSize / config.numAttentionHeads == 16 && config.numKeyValueHeads == 2)
        #expect(config.tieWordEmbeddings && config.rope?.theta == 1e6 && config.slidingWindow == nil)
        #expect(!config.queryKeyValueBias && !config.attentionOutputBias && !config.mlpBias)
        // Tied: the checkpoint has no lm_head.weight, and every tensor (q_norm, k_norm too) is used.
        #expect(try Checkpoint(path: Self.base).info("lm_head.weight") == nil)
        #expect(model.unusedWeights.isEmpty, "unused \(model.unusedWeights)")
    }

    /// transformers 5.24 Qwen3Config defaults, printed by the peft venv: head_dim 128 whatever
    /// hidden_size / heads is, num_key_value_heads 32, vocab 151936, untied, no window; with
    /// use_sliding_window the layers from max_window_layers on slide, without it none does.
    @Test func defaultsAsQwen3Config() throws {
        func decode(_ json: String) throws -> ModelConfig { try ModelConfig.decode(Data(json.utf8)) }
        let bare = try decode(#"{"model_type": "qwen3"}"#)
        #expect(bare.headDim == 128 && bare.numKeyValueHeads == 32 && bare.vocabSize == 151936)
        #expect(!bare.tieWordEmbeddings && bare.slidingWindow == nil && bare.rope?.theta == 10_000)
        #expect(bare.intermediateSize == 22016 && bare.maxPositionEmbeddings == 32768)
        #expect(try decode(#"{"model_type": "qwen3", "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 4}"#).headDim == 128)
        let sliding = try decode(#"{"model_type": "qwen3", "num_hidden_layers": 4, "use_sliding_window": true, "sliding_window": 4, "max_window_layers": 2}"#)
        #expect(sliding.slidingWindow == 4 && sliding.slidingWindowLayers == [2, 3])
        let off = try decode(#"{"model_type": "qwen3", "num_hidden_layers": 4, "use_sliding_window": false, "sliding_window": 4, "max_window_layers": 2}"#)
        #expect(off.slidingWindow == nil && off.slidingWindowLayers.isEmpty)
    }

    /// Negative control: the same weights run as a Llama-layout decoder (no q/k norm) leave the
    /// four norm weights unused and move the logits far past the tolerance; the generator shows
    /// transformers moves as much with the norms removed (fixtures/README.md).
    @Test func queryKeyNormsDecideTheOutput() throws {
        let exact = try FamilyFixtures.relativeError(try FamilyFixtures.model(Self.base), against: "output_base", of: Self.reference)
        #expect(exact <= 1e-5, "relative error \(exact)")
        let withoutNorms = try FamilyFixtures.model(Self.base) { $0.family = .llama }
        #expect(withoutNorms.unusedWeights.sorted() == [0, 1].flatMap { layer in
            ["k_norm", "q_norm"].map { "model.layers.\(layer).self_attn.\($0).weight" }
        })
        let moved = try FamilyFixtures.relativeError(withoutNorms, against: "output_base", of: Self.reference)
        #expect(moved > 1e-3, "without q/k norms: relative error only \(moved)")
    }

    /// Merging into the tied base keeps the tie as PEFT's merge does (no lm_head.weight written,
    /// tie_word_embeddings still true) when the adapter leaves embedding and head alone.
    @Test(arguments: ["qwen3_lora", "qwen3_dora", "qwen3_ia3"])
    func mergeKeepsTheTie(caseName: String) throws {
        let familyCase = "qwen3/\(caseName)"
        let tie = try SafetensorsFile(path: FamilyFixtureTests.reference(familyCase)).metadata?["peft_merged_tie"]
        #expect(tie == "true")
        let output = Fixtures.temporaryDirectory() + "/merged"
        let report = try Merge.run(base: Self.base, inputs: [MergeInput(pack: try FamilyFixtureTests.pack(familyCase), adapter: nil, weight: 1)],
                                   output: output, options: .init())
        #expect(report.tiedEmbeddings == nil || report.tiedEmbeddings?.outcome == "kept-identical")
        #expect(try Checkpoint(path: output).info("lm_head.weight") == nil)
        let merged = try FamilyFixtures.model(output)
        #expect(merged.config.tieWordEmbeddings)
        let error = try FamilyFixtures.relativeError(merged, against: "output_adapter", of: FamilyFixtureTests.reference(familyCase))
        #expect(error <= 1e-5, "\(caseName): relative error \(error)")
    }
}
