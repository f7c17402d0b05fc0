import Foundation
import Testing
@testable import PeftPack

/// A module promoted by `merge --dtype same --promote` on an MLX base is written dense and marked
/// `false` in config.json's `quantization`, which mlx-lm's loader would otherwise follow for a
/// module it names (tests/python/check_mlx_quantized.py loads such an output).
@Suite struct MLXDenseModulesTests {
    static let entry = "\"quantization\": {\n        \"group_size\": 64,"
    static let override = "\"model.layers.1.mlp.down_proj\": {\"group_size\": 64, \"bits\": 4, \"mode\": \"affine\"}"

    @Test func anExistingEntryBecomesFalseAndAMissingOneIsAddedFirst() throws {
        let text = "{\n    \"quantization\": {\n        \"bits\": 4,\n        \"group_size\": 64,\n        \"a.b\": {\"bits\": 8}\n    },\n    \"quantization_config\": {}\n}\n"
        let marked = MLXDenseModules.markingUnquantized(["a.b", "c"], in: text)
        #expect(marked == "{\n    \"quantization\": {\n        \"c\": false,\n        \"bits\": 4,\n        \"group_size\": 64,\n        \"a.b\": false\n    },\n    \"quantization_config\": {\"c\": false,\"a.b\": false}\n}\n")
        let parsed = try #require(try MLXQuantization(configText: marked, file: "config.json"))
        #expect(parsed.parameters(ofModule: "a.b") == nil && parsed.parameters(ofModule: "c") == nil)
        #expect(parsed.parameters(ofModule: "d")?.bits == 4)
    }

    /// q4_g64 with a per-module entry for the layer the survival threshold promotes.
    @Test func aPromotedModuleIsMarkedUnquantizedInConfig() throws {
        let base = try MLXQuantizedRefusalTests.edited(config: {
            $0.replacingOccurrences(of: Self.entry, with: "\"quantization\": {\n        \(Self.override),\n        \"group_size\": 64,")
        })
        let pack = try MLXQuantizedBaseTests.pack(base: base)
        let output = Fixtures.temporaryDirectory() + "/merged"
        let report = try Merge.run(base: base, inputs: [MergeInput(pack: pack, adapter: nil, weight: 1)], output: output,
                                   options: Merge.Options(keepsQuantization: true, minSurvival: 0.95, promotion: Promotion(precision: .bf16, allMerged: false)))
        #expect((report.requantized ?? []).filter { $0.promotedTo != nil }.map(\.tensor) == ["model.layers.1.mlp.down_proj.weight"])
        let config = try String(contentsOfFile: output + "/config.json", encoding: .utf8)
        #expect(config.contains("\"model.layers.1.mlp.down_proj\": false"))
        #expect(!config.contains(Self.override))
        #expect(config.contains("\"quantization_config\": {\n        \"model.layers.1.mlp.down_proj\": false,\n        \"group_size\": 64,"))
        let quantization = try #require(try MLXQuantization(configText: config, file: "config.json"))
        #expect(quantization.parameters(ofModule: "model.layers.1.mlp.down_proj") == nil)
        #expect(quantization.parameters(ofModule: "model.layers.1.self_attn.q_proj")?.bits == 4)
        let written = try Checkpoint(path: output)
        #expect(!written.isQuantized("model.layers.1.mlp.down_proj.weight") && written.isQuantized("model.layers.1.self_attn.q_proj.weight"))
    }
}
