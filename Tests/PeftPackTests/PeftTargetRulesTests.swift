import Foundation
import Testing
@testable import PeftPack

/// fixtures/data/configs cases: what the real stack did with them, and what peftpack must do.
enum ConfigFixtures {
    static func path(_ relative: String) -> String { Fixtures.path("configs/\(relative)") }

    static func reference(_ caseName: String) -> String { path("\(caseName)/\(caseName).ref.safetensors") }

    static func baseFolder(of caseName: String) throws -> String {
        Fixtures.path(try #require(try SafetensorsFile(path: reference(caseName)).metadata?["base"]))
    }

    static func pack(_ caseName: String, dropUnloaded: Bool = false) throws -> (path: String, report: PackImport.Report) {
        let output = Fixtures.temporaryDirectory() + "/\(caseName).peftpack"
        let report = try PackImport.run(sources: [.init(path: path("\(caseName)/adapter"), name: nil)], output: output,
                                        baseFolder: try baseFolder(of: caseName), level: 3, dropUnloaded: dropUnloaded)
        return (output, report)
    }

    /// Same as PipelineVerifyTests: fp32 on both sides in different summation orders leaves a few
    /// ulps of the output scale (observed ≤ 7e-7 relative here); 1e-5 relative fails any change
    /// of a module or row, as the negative controls show.
    static let tolerance = Verify.Tolerance(absolute: 0, relative: 1e-5)

    static func verify(_ pack: String, against caseName: String) throws -> Verify.Comparison {
        let report = try Verify.run(pack: pack, base: baseFolder(of: caseName), adapterNames: [],
                                    targets: [.reference(path: reference(caseName), key: nil)],
                                    inputShape: (2, 7), seed: 0, tolerance: tolerance)
        return report.comparisons[0]
    }

    static func output(_ caseName: String, _ key: String) throws -> [Float] {
        try SafetensorsFile(path: reference(caseName)).tensor(key).floats()
    }
}

/// target_modules, exclude_modules, layers_to_transform and modules_to_save read as PEFT 0.21 reads
/// them. The narrowed_* cases hold one trained adapter (q/v/o_proj of both layers) under configs
/// edited afterwards; their references are PEFT's own PeftModel.from_pretrained of each folder.
@Suite struct PeftTargetRulesTests {
    static let narrowed: [(name: String, dropped: Int, rule: String)] = [
        ("narrowed_list", 4, "is not matched by target_modules [q_proj, v_proj] (exact names or .-suffixes)"),
        ("narrowed_regex", 6, "is not matched by target_modules \".*\\.layers\\.0\\.self_attn\\.(q_proj|v_proj|o_proj)\""),
        ("narrowed_exclude", 4, "is excluded by exclude_modules entry \"o_proj\""),
        ("narrowed_layers", 6, "is in layer 0, not in layers_to_transform [1]"),
    ]

    /// The reference itself moves: PEFT's load of each narrowed folder is far from the adapter as
    /// trained, so applying every saved tensor (what peftpack did before) is wrong.
    @Test(arguments: narrowed.map(\.name))
    func peftIgnoresTheUncoveredTensors(caseName: String) throws {
        let asTrained = try ConfigFixtures.output("narrowed_trained", "output_adapter")
        let asLoaded = try ConfigFixtures.output(caseName, "output_adapter")
        let moved = zip(asTrained, asLoaded).map { abs($0 - $1) }.max()!
        print("\(caseName): PEFT's load is \(moved) max abs logits from the adapter as trained")
        #expect(moved > 0.01)
        let (pack, _) = try ConfigFixtures.pack("narrowed_trained")
        #expect(try ConfigFixtures.verify(pack, against: caseName).passed == false)
    }

    @Test(arguments: narrowed.map(\.name))
    func importRefusesNamingTheTensorAndTheRule(caseName: String) throws {
        let rule = Self.narrowed.first { $0.name == caseName }!.rule
        let output = Fixtures.temporaryDirectory() + "/out.peftpack"
        let result = try CLI.run(["import", ConfigFixtures.path("\(caseName)/adapter"), "-o", output])
        #expect(result.status == 2)
        #expect(result.stderr.contains("tensor base_model.model.model.layers."), "\(result.stderr)")
        #expect(result.stderr.contains("PEFT would not load it"), "\(result.stderr)")
        #expect(result.stderr.contains(rule), "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1)
        #expect(!FileManager.default.fileExists(atPath: output))
    }

    @Test(arguments: narrowed.map(\.name))
    func dropUnloadedReproducesPeftsLoad(caseName: String) throws {
        let expected = Self.narrowed.first { $0.name == caseName }!
        let (pack, report) = try ConfigFixtures.pack(caseName, dropUnloaded: true)
        #expect(report.droppedTensors.count == expected.dropped)
        #expect(report.droppedTensors.allSatisfy { $0.reason.contains(expected.rule) })
        let comparison = try ConfigFixtures.verify(pack, against: caseName)
        #expect(comparison.passed, "max rel \(comparison.maxRelError)")
    }

    /// Adapters trained with a regex, a regex exclude_modules, or layers_to_transform: every saved
    /// tensor is one PEFT loads, and the pack reproduces PEFT.
    @Test(arguments: ["matched_regex", "matched_exclude", "matched_layers"])
    func adaptersTrainedWithTheRulesImportWhole(caseName: String) throws {
        let (pack, report) = try ConfigFixtures.pack(caseName)
        #expect(report.droppedTensors.isEmpty)
        let comparison = try ConfigFixtures.verify(pack, against: caseName)
        #expect(comparison.passed, "max rel \(comparison.maxRelError)")
    }

    static func rules(_ json: String) throws -> PeftTargetRules {
        try PeftTargetRules(json: try StrictJSON.parse(Array(json.utf8))) { InputError(file: "c", problem: $0) }
    }

    /// re.fullmatch succeeds when any way of matching spans the name, not only the first found.
    @Test func regexTargetsAreFullMatchedAsPythonDoes() throws {
        let rules = try Self.rules(#"{"target_modules": "a|ab"}"#)
        #expect(rules.whyNotTargeted("ab", isEmbedding: false) == nil)
        #expect(rules.whyNotTargeted("abc", isEmbedding: false) != nil)
        let dotted = try Self.rules(#"{"target_modules": ".*\\.q_proj"}"#)
        #expect(dotted.whyNotTargeted("model.layers.0.self_attn.q_proj", isEmbedding: false) == nil)
        #expect(dotted.whyNotTargeted("model.layers.0.self_attn.q_proj_extra", isEmbedding: false) != nil)
    }

    /// A list matches exact names or .-suffixes, never a bare suffix of a segment.
    @Test func listTargetsMatchNamesOrDotSuffixes() throws {
        let rules = try Self.rules(#"{"target_modules": ["proj", "self_attn.q_proj"]}"#)
        #expect(rules.whyNotTargeted("model.layers.0.self_attn.q_proj", isEmbedding: false) == nil)
        #expect(rules.whyNotTargeted("model.layers.0.mlp.up_proj", isEmbedding: false) != nil)
        #expect(rules.whyNotTargeted("proj", isEmbedding: false) == nil)
    }

    /// PEFT takes the first numbered segment (lazy `.*?`): the layer, not an expert index after it.
    @Test func layerIndexIsTheFirstNumberedSegment() throws {
        let rules = try Self.rules(#"{"target_modules": ["w1"], "layers_to_transform": [1]}"#)
        #expect(rules.layerIndex("model.layers.1.mlp.experts.0.w1") == 1)
        #expect(rules.whyNotTargeted("model.layers.1.mlp.experts.0.w1", isEmbedding: false) == nil)
        #expect(rules.whyNotTargeted("model.layers.0.mlp.experts.1.w1", isEmbedding: false) != nil)
        let patterned = try Self.rules(#"{"target_modules": ["q"], "layers_to_transform": 2, "layers_pattern": ["h"]}"#)
        #expect(patterned.layerIndex("transformer.h.2.attn.q") == 2)
        #expect(patterned.layerIndex("h.2.attn.q") == 2)
    }

    /// all-linear covers every linear layer but the output head, and no embedding.
    @Test func allLinearLeavesOutTheHeadAndEmbeddings() throws {
        let rules = try Self.rules(#"{"target_modules": "all-linear"}"#)
        #expect(rules.whyNotTargeted("model.layers.0.mlp.down_proj", isEmbedding: false) == nil)
        #expect(rules.whyNotTargeted("lm_head", isEmbedding: false) != nil)
        #expect(rules.whyNotTargeted("model.embed_tokens", isEmbedding: true) != nil)
    }

    /// The full tensors the existing PEFT fixtures save (modules_to_save copies, a targeted
    /// embedding's base_layer, trained biases) are all ones PEFT loads.
    @Test(arguments: ["llama_lora_modules_to_save", "llama_lora_embedding", "bert_lora_bias"])
    func savedFullTensorsOfRealAdaptersAreLoaded(caseName: String) throws {
        let folder = Fixtures.path("cases/\(caseName)/adapter")
        let config = try PeftConfig(text: String(contentsOfFile: folder + "/adapter_config.json", encoding: .utf8), file: "c")
        let check = PeftLoadCheck(config: config)
        for name in try SafetensorsFile(path: folder + "/adapter_model.safetensors").names {
            #expect(check.whyNotLoaded(String(name.dropFirst(PeftKeys.modelPrefix.count))) == nil, "\(name)")
        }
    }
}
