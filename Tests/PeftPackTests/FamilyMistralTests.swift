import Foundation
import Testing
@testable import PeftPack

/// Mistral (fixtures/data/families/mistral): MistralForCausalLM with a 3-token sliding window on
/// both layers (the reference input has 7 tokens), 4 query heads over 1 key/value head and
/// rope_theta 1e6. FamilyFixtureTests runs the cases; this suite pins what is Mistral's own.
/// Tolerance: 1e-5 relative, as FamilyFixtureTests; a control must move the output by > 1e-3.
@Suite struct FamilyMistralTests {
    static let base = FamilyFixtureTests.base("mistral")
    static let reference = FamilyFixtureTests.reference("mistral/mistral_lora")

    static func baseError(_ edit: (inout ModelConfig) -> Void = { _ in }) throws -> Double {
        try FamilyFixtures.relativeError(try FamilyFixtures.model(base, edit: edit), against: "output_base", of: reference)
    }

    @Test func configAsMistralConfigReadsIt() throws {
        let config = try FamilyFixtures.model(Self.base).config
        #expect(config.family == .mistral && config.architecture == "MistralForCausalLM")
        #expect(config.slidingWindow == 3 && config.slidingWindowLayers == [0, 1])
        #expect(config.numAttentionHeads == 4 && config.numKeyValueHeads == 1 && config.headDim == 16)
        #expect(config.rope?.theta == 1e6 && !config.tieWordEmbeddings)
        #expect(!config.queryKeyValueBias && !config.attentionOutputBias && !config.mlpBias)
    }

    /// transformers 5.24: MistralConfig() has sliding_window 4096; from_dict with an explicit null
    /// keeps None (printed by the peft venv).
    @Test func windowDefaultAndExplicitNull() throws {
        let missing = try ModelConfig.decode(Data(#"{"model_type": "mistral", "num_hidden_layers": 2}"#.utf8))
        #expect(missing.slidingWindow == 4096 && missing.slidingWindowLayers == [0, 1])
        let null = try ModelConfig.decode(Data(#"{"model_type": "mistral", "sliding_window": null}"#.utf8))
        #expect(null.slidingWindow == nil && null.slidingWindowLayers.isEmpty)
    }

    /// Negative controls: the base output matches transformers only with the saved window and rope
    /// base. Without the window, with a window one token off either way, or with rope_theta 1e4,
    /// the runtime's logits move far past the tolerance (transformers moves as much: the
    /// generator's own controls, fixtures/README.md).
    @Test func windowAndRopeBaseDecideTheOutput() throws {
        let exact = try Self.baseError()
        #expect(exact <= 1e-5, "relative error \(exact)")
        let controls: [(String, (inout ModelConfig) -> Void)] = [
            ("no window", { $0.slidingWindow = nil; $0.slidingWindowLayers = [] }),
            ("window 2", { $0.slidingWindow = 2 }),
            ("window 4", { $0.slidingWindow = 4 }),
            ("rope_theta 1e4", { $0.rope?.theta = 10_000 }),
        ]
        for (name, edit) in controls {
            let moved = try Self.baseError(edit)
            #expect(moved > 1e-3, "\(name): relative error only \(moved)")
        }
    }
}
