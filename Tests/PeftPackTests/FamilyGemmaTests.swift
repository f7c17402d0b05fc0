import Foundation
import Testing
@testable import PeftPack

/// Gemma 2 (`Gemma2ForCausalLM`) and Gemma 3 text (`Gemma3ForCausalLM`) against the references
/// transformers 5.24 and PEFT 0.21.2 computed (fixtures/data/families/gemma2 and gemma3, made by
/// fixturegen/family_gemma2.py and family_gemma3.py), beyond what FamilyFixtureTests checks for
/// every family: config.json read as transformers reads it (defaults, 4.x spellings, per-layer-type
/// rope), negative controls showing the runtime misses the reference without each Gemma trait,
/// and the merged folder against PEFT's own merge with the tie kept.
///
/// Tolerance: 1e-5 of the reference's largest magnitude, as RuntimeReferenceTests: fp32 on both
/// sides, different summation orders (observed ≤ 2.2e-6 relative here, through three or four
/// layers, two soft-caps and a GELU). The generator's negative controls show every Gemma feature
/// (soft-caps, windows, rope bases, q/k norms, (1 + w), embedding scale, sandwich norms) moves the
/// references by 1e-3 to 1 relative; the controls below show the runtime would miss them too.
@Suite struct FamilyGemmaTests {
    static let families = ["gemma2", "gemma3"]
    static let kinds = ["lora", "dora", "ia3"]
    static let cases = families.flatMap { family in kinds.map { "\(family)_\($0)" } }
    static let tolerance = Verify.Tolerance(absolute: 0, relative: 1e-5)
    static let relativeTolerance = 1e-5

    static func root(_ family: String) -> String { Fixtures.path("families/\(family)") }
    static func base(_ family: String) -> String { root(family) + "/model" }
    static func family(ofCase caseName: String) -> String { String(caseName.prefix { $0 != "_" }) }
    static func reference(_ caseName: String) -> String {
        root(family(ofCase: caseName)) + "/cases/\(caseName)/\(caseName).ref.safetensors"
    }

    static func pack(_ caseName: String) throws -> String {
        let output = Fixtures.temporaryDirectory() + "/\(caseName).peftpack"
        _ = try PackImport.run(sources: [.init(path: root(family(ofCase: caseName)) + "/cases/\(caseName)/adapter", name: nil)],
                               output: output, baseFolder: base(family(ofCase: caseName)), level: 3)
        return output
    }

    static func baseModel(_ family: String, edit: (inout ModelConfig) -> Void = { _ in }) throws -> TransformerModel {
        var config = try ModelConfig.load(contentsOf: URL(fileURLWithPath: base(family) + "/config.json"))
        edit(&config)
        return try TransformerModel.load(config: config, weights: try Checkpoint(path: base(family)))
    }

    /// The base's output on the reference ids, relative to output_base.
    static func baseError(_ model: TransformerModel, _ family: String) throws -> Double {
        let reference = try ReferenceFile(path: Self.reference("\(family)_lora"))
        return RuntimeFixtures.relativeError(try model.forward(inputIds: try reference.inputRows()), try reference.output("output_base"))
    }

    @Test(arguments: families)
    func configIsReadAsTransformersReadsIt(family: String) throws {
        let url = URL(fileURLWithPath: Self.root(family) + "/config_readings.json")
        let readings = try #require((try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])?["readings"] as? [[String: Any]])
        #expect(readings.count >= 5)
        for reading in readings {
            let name = try #require(reading["name"] as? String)
            let json = try JSONSerialization.data(withJSONObject: try #require(reading["config"]))
            let expected = try #require(reading["transformers"] as? [String: Any])
            if expected["use_bidirectional_attention"] as? Bool == true {
                #expect(throws: RuntimeError.self, "\(family) \(name): a bidirectional config is refused") { try ModelConfig.decode(json) }
                continue
            }
            let config = try ModelConfig.decode(json)
            func int(_ key: String) -> Int? { (expected[key] as? NSNumber)?.intValue }
            func double(_ key: String) -> Double? { (expected[key] as? NSNumber)?.doubleValue }
            let sizes = [(config.vocabSize, "vocab_size"), (config.hiddenSize, "hidden_size"), (config.intermediateSize, "intermediate_size"),
                         (config.numLayers, "num_hidden_layers"), (config.numAttentionHeads, "num_attention_heads"),
                         (config.numKeyValueHeads, "num_key_value_heads"), (config.headDim, "head_dim"),
                         (config.maxPositionEmbeddings, "max_position_embeddings"), (config.slidingWindow ?? -1, "sliding_window")]
            for (value, key) in sizes { #expect(value == int(key), "\(family) \(name): \(key)") }
            #expect(config.normEpsilon == double("rms_norm_eps"), "\(family) \(name)")
            #expect(config.activation == expected["hidden_activation"] as? String, "\(family) \(name)")
            #expect(config.tieWordEmbeddings == (expected["tie_word_embeddings"] as? Bool), "\(family) \(name)")
            let bias = try #require(expected["attention_bias"] as? Bool)
            #expect(config.queryKeyValueBias == bias && config.attentionOutputBias == bias && !config.mlpBias, "\(family) \(name)")
            #expect(config.attentionScale == pow(try #require(double("query_pre_attn_scalar")), -0.5), "\(family) \(name)")
            // Gemma 3's attention never soft-caps in transformers, whatever the config says.
            #expect(config.attentionSoftcap == (family == "gemma2" ? double("attn_logit_softcapping") : nil), "\(family) \(name)")
            #expect(config.finalLogitSoftcap == double("final_logit_softcapping"), "\(family) \(name)")
            let types = try #require(expected["layer_types"] as? [String])
            #expect(config.slidingWindowLayers == Set(types.indices.filter { types[$0] == "sliding_attention" }), "\(family) \(name)")
            let rotary = try #require(expected["rotary"] as? [String: [String: Any]])
            let tables: [String: RopeParameters?] = family == "gemma2"
                ? ["all_layers": config.rope] : ["full_attention": config.rope, "sliding_attention": config.slidingRope]
            if family == "gemma2" { #expect(config.slidingRope == nil) }
            for (layerType, table) in rotary {
                let rope = try #require(tables[layerType] ?? nil, "\(family) \(name): no rope for \(layerType)")
                let (inverse, scaling) = rope.inverseFrequencies(headDim: config.headDim, maxPositionEmbeddings: config.maxPositionEmbeddings,
                                                                 sequenceLength: 7)
                let torch = try #require(table["inv_freq"] as? [NSNumber]).map(\.doubleValue)
                #expect(Double(scaling) == (table["attention_scaling"] as? NSNumber)?.doubleValue, "\(family) \(name) \(layerType)")
                #expect(inverse.count == torch.count, "\(family) \(name) \(layerType)")
                // torch raises the base to each exponent in fp32, peftpack in fp64 rounded once:
                // the two may differ by an fp32 ulp (6e-8 relative), far below anything logits notice.
                let worst = zip(inverse, torch).map { abs(Double($0) - $1) / $1 }.max() ?? 0
                #expect(worst <= 1e-6, "\(family) \(name) \(layerType): inv_freq off by \(worst) relative")
            }
        }
    }

    /// The unedited runtime matches transformers' base output (FamilyFixtureTests checks it too);
    /// the controls below edit one thing each.
    @Test(arguments: families)
    func runtimeMatchesTheBaseOutput(family: String) throws {
        let error = try Self.baseError(try Self.baseModel(family), family)
        print("\(family) base: relative error \(error)")
        #expect(error <= Self.relativeTolerance)
    }

    /// Each feature switched off in the runtime misses transformers' output by far more than the
    /// tolerance, so the base and adapter comparisons fail without any of them.
    @Test(arguments: [
        ("gemma2", "no final soft-cap"), ("gemma2", "no attention soft-cap"), ("gemma2", "no sliding window"),
        ("gemma2", "1/sqrt(head_dim) query scale"), ("gemma3", "no sliding window"), ("gemma3", "global rope on sliding layers"),
        ("gemma3", "1/sqrt(head_dim) query scale"),
    ])
    func runtimeWithoutAFeatureMissesTheReference(family: String, control: String) throws {
        let model = try Self.baseModel(family) { config in
            switch control {
            case "no final soft-cap": config.finalLogitSoftcap = nil
            case "no attention soft-cap": config.attentionSoftcap = nil
            case "no sliding window": config.slidingWindowLayers = []
            case "global rope on sliding layers": config.slidingRope = nil
            default: config.attentionScale = nil
            }
        }
        let error = try Self.baseError(model, family)
        print("\(family) without \(control): relative error \(error)")
        #expect(error > 100 * Self.relativeTolerance)
    }

    /// The same for the layer's structure: Llama's norms (post_attention_layernorm before the MLP,
    /// no output norms), w instead of 1 + w, unscaled embeddings, no q/k norm.
    @Test(arguments: [("gemma2", "llama norms"), ("gemma2", "w norms"), ("gemma2", "unscaled embeddings"),
                      ("gemma3", "no q/k norm"), ("gemma3", "w norms")])
    func runtimeWithAnotherLayoutMissesTheReference(family: String, control: String) throws {
        let model = try Self.baseModel(family) { config in
            var layout = family == "gemma2" ? DecoderLayout.gemma2 : DecoderLayout.gemma3
            switch control {
            case "llama norms": (layout.preFeedForwardNorm, layout.postAttentionNorm, layout.postFeedForwardNorm) = ("post_attention_layernorm", nil, nil)
            case "w norms": layout.normsOffsetByOne = false
            case "unscaled embeddings": layout.scalesEmbeddings = false
            default: (layout.queryNorm, layout.keyNorm) = (nil, nil)
            }
            config.family = .rotaryDecoder(modelType: config.modelType, classNames: [], layout: layout,
                                           configDefaults: ConfigDefaults(), llamaCpp: nil, readConfig: { _, _ in })
        }
        let error = try Self.baseError(model, family)
        print("\(family) with \(control): relative error \(error)")
        #expect(error > 100 * Self.relativeTolerance)
    }

    /// The merged folder keeps the tie (no lm_head.weight: no case touches the head, and PEFT's
    /// merge keeps tie_word_embeddings) and runs as PEFT's own merge does.
    @Test(arguments: cases)
    func mergedModelKeepsTheTieAndMatchesPeftsMerge(caseName: String) throws {
        let family = Self.family(ofCase: caseName)
        let output = Fixtures.temporaryDirectory() + "/merged"
        _ = try Merge.run(base: Self.base(family), inputs: [MergeInput(pack: try Self.pack(caseName), adapter: nil, weight: 1)],
                          output: output, options: .init())
        #expect(try Checkpoint(path: output).info("lm_head.weight") == nil)
        let reference = try ReferenceFile(path: Self.reference(caseName))
        #expect(reference.file.metadata?["peft_merged_tie"] == "true")
        let (model, _) = try Verify.loadModel(output)
        #expect(model.config.tieWordEmbeddings)
        let comparison = try reference.compare(model, with: "output_peft_merged", label: "PEFT's merge", tolerance: Self.tolerance)
        #expect(comparison.passed, "\(caseName) merged vs PEFT's merge: max rel \(comparison.maxRelError)")
    }
}
