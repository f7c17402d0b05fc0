import Foundation
import Testing
@testable import PeftPack

/// Ministral (fixtures/data/families/ministral): MinistralForCausalLM whose `layer_types` make layer 0
/// slide (window 3; the reference input has 7 tokens) and layer 1 attend fully. FamilyFixtureTests
/// runs the cases; this suite pins what is Ministral's own.
/// Tolerance: 1e-5 relative, as FamilyFixtureTests; a control must move the output by > 1e-3.
@Suite struct FamilyMinistralTests {
    static let base = FamilyFixtureTests.base("ministral")
    static let reference = FamilyFixtureTests.reference("ministral/ministral_lora")

    static func baseError(_ edit: (inout ModelConfig) -> Void = { _ in }) throws -> Double {
        try FamilyFixtures.relativeError(try FamilyFixtures.model(base, edit: edit), against: "output_base", of: reference)
    }

    @Test func configAsMinistralConfigReadsIt() throws {
        let config = try FamilyFixtures.model(Self.base).config
        #expect(config.family == .ministral && config.architecture == "MinistralForCausalLM")
        #expect(config.slidingWindow == 3 && config.slidingWindowLayers == [0])
        #expect(config.numAttentionHeads == 4 && config.numKeyValueHeads == 2 && config.headDim == 16)
        #expect(config.rope?.theta == 1e6 && !config.tieWordEmbeddings)
    }

    /// transformers 5.24: MinistralConfig without layer_types fills it with "sliding_attention" on
    /// every layer while sliding_window is set (default 4096), "full_attention" when it is null.
    @Test func layerTypesDefault() throws {
        let missing = try ModelConfig.decode(Data(#"{"model_type": "ministral", "num_hidden_layers": 2}"#.utf8))
        #expect(missing.slidingWindow == 4096 && missing.slidingWindowLayers == [0, 1])
        let null = try ModelConfig.decode(Data(#"{"model_type": "ministral", "num_hidden_layers": 2, "sliding_window": null}"#.utf8))
        #expect(null.slidingWindowLayers.isEmpty)
    }

    /// Negative controls: sliding every layer (Mistral's rule) or none moves the runtime's logits far
    /// past the tolerance, as the generator's controls show transformers' do (fixtures/README.md).
    @Test func layerTypesDecideTheOutput() throws {
        let exact = try Self.baseError()
        #expect(exact <= 1e-5, "relative error \(exact)")
        let controls: [(String, (inout ModelConfig) -> Void)] = [
            ("every layer sliding", { $0.slidingWindowLayers = [0, 1] }),
            ("no layer sliding", { $0.slidingWindowLayers = [] }),
        ]
        for (name, edit) in controls {
            let moved = try Self.baseError(edit)
            #expect(moved > 1e-3, "\(name): relative error only \(moved)")
        }
    }

    /// llama.cpp's converter has no Ministral class: a GGUF export is refused by name, not written
    /// under another family's names.
    @Test func ggufExportIsRefused() throws {
        let pack = try FamilyFixtureTests.pack("ministral/ministral_lora")
        let output = Fixtures.temporaryDirectory() + "/ministral.gguf"
        let error = try #require(throws: InputError.self) {
            _ = try PackExport.run(pack: pack, output: output, format: .gguf, name: nil, force: false)
        }
        #expect(error.problem.contains("MinistralForCausalLM") && error.problem.contains("does not support"), "\(error.problem)")
        #expect(!FileManager.default.fileExists(atPath: output))
    }
}
