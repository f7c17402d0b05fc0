import Foundation
import Testing
@testable import PeftPack

/// Module layouts as PEFT decides them, per module type and not from adapter_config.json's
/// fan_in_fan_out (fixtures/data/fifo, made with transformers 5 and PEFT 0.21), and LoRA on
/// GPT-2's position embedding wpe. Tolerance: 1e-5 of the reference's largest magnitude, as
/// TiedEmbeddingTests (fp32 on both sides, different summation order; observed ≤ 1e-6 relative).
@Suite struct ModuleLayoutTests {
    static let tolerance = Verify.Tolerance(absolute: 0, relative: 1e-5)
    /// GPT-2 LoRAs whose config says fan_in_fan_out false (lm_head, visited last, set it) though
    /// PEFT ran the block modules as Conv1D.
    static let gpt2Cases = ["gpt2_cproj_head", "gpt2_cattn_head"]
    /// gpt2_ia3: IA3 on Conv1D modules scales the stored [in, out] weight's other axis (the merge
    /// took them as nn.Linear before: 1.18 logits off).
    static let cases = gpt2Cases + ["llama_fifo_true", "gpt2_lora_wpe", "gpt2_ia3"]

    static func reference(_ caseName: String) -> String { Fixtures.path("fifo/\(caseName)/\(caseName).ref.safetensors") }
    static func adapterFolder(_ caseName: String) -> String { Fixtures.path("fifo/\(caseName)/adapter") }

    static func metadata(_ caseName: String, _ key: String) throws -> String {
        try #require(try SafetensorsFile(path: reference(caseName)).metadata?[key])
    }

    static func base(_ caseName: String) throws -> String { Fixtures.path(try metadata(caseName, "base")) }

    static func pack(_ caseName: String, withBase: Bool) throws -> String {
        let output = Fixtures.temporaryDirectory() + "/\(caseName).peftpack"
        _ = try PackImport.run(sources: [.init(path: adapterFolder(caseName), name: nil)], output: output,
                               baseFolder: withBase ? try base(caseName) : nil, level: 3)
        return output
    }

    static func merge(_ pack: String, _ caseName: String, policy: TiedEmbeddingsPolicy = .untie) throws -> String {
        let output = Fixtures.temporaryDirectory() + "/merged"
        _ = try Merge.run(base: try base(caseName), inputs: [MergeInput(pack: pack, adapter: nil, weight: 1)],
                          output: output, options: .init(tiedEmbeddings: policy))
        return output
    }

    static func compare(model folder: String, with key: String, of caseName: String) throws -> Verify.Comparison {
        let (model, _) = try Verify.loadModel(folder)
        return try ReferenceFile(path: reference(caseName)).compare(model, with: key, label: key, tolerance: tolerance)
    }

    static func outputGap(_ caseName: String, _ a: String, _ b: String) throws -> Double {
        let file = try SafetensorsFile(path: reference(caseName))
        return zip(try file.tensor(a).floats(), try file.tensor(b).floats()).map { Double(abs($0 - $1)) }.max() ?? 0
    }

    static func layouts(_ pack: String) throws -> [String: WeightLayout] {
        let modules = try PackReader(path: pack).adapterDocument().adapters[0].modules.filter { !$0.isWholeTensor }
        return Dictionary(uniqueKeysWithValues: modules.map { ($0.target, $0.layout ?? .linear) })
    }

    /// The one rule: a base's model type decides; without one GPT-2-style block names are Conv1D.
    @Test func theRuleFollowsTheModuleType() {
        let cProj = "transformer.h.0.attn.c_proj"
        #expect(ModuleLayoutRule.layout(of: cProj, modelType: "gpt2") == .conv1d)
        #expect(ModuleLayoutRule.layout(of: "h.1.mlp.c_fc", modelType: "openai-gpt") == .conv1d)
        #expect(ModuleLayoutRule.layout(of: cProj, modelType: nil) == .conv1d)
        #expect(ModuleLayoutRule.layout(of: cProj, modelType: "gpt_bigcode") == .linear)
        #expect(ModuleLayoutRule.layout(of: "lm_head", modelType: "gpt2") == .linear)
        #expect(ModuleLayoutRule.layout(of: "model.layers.0.self_attn.q_proj", modelType: nil) == .linear)
    }

    /// Without --base the pack records what PEFT ran, not the saved fan_in_fan_out: the block
    /// modules Conv1D, lm_head and Llama's projections nn.Linear. Control: where the LoRA configs
    /// say the opposite, the old reading of the config would fail this.
    @Test(arguments: cases)
    func importRecordsThePeftLayoutWithoutABase(caseName: String) throws {
        let layouts = try Self.layouts(try Self.pack(caseName, withBase: false))
        let saved = try Self.metadata(caseName, "saved_fan_in_fan_out")
        for (target, layout) in layouts {
            let expected: WeightLayout = target.hasSuffix("wpe") ? .embedding : (caseName.hasPrefix("gpt2") && target != "lm_head" ? .conv1d : .linear)
            #expect(layout == expected, "\(caseName) \(target): \(layout)")
        }
        #expect(saved == (Self.gpt2Cases.contains(caseName) ? "false" : "true"))
    }

    /// import --base accepts c_attn + lm_head (it refused with a false [192, 64] vs [64, 192] shape
    /// error), and the runtime computes what PEFT computes.
    @Test(arguments: cases)
    func runtimeMatchesPeft(caseName: String) throws {
        let report = try Verify.run(pack: try Self.pack(caseName, withBase: true), base: try Self.base(caseName), adapterNames: [],
                                    targets: [.reference(path: Self.reference(caseName), key: "output_adapter")],
                                    inputShape: (2, 7), seed: 0, tolerance: Self.tolerance)
        #expect(report.passed, "\(caseName): max rel \(report.comparisons[0].maxRelError)")
    }

    /// Merged models compute what PEFT's adapter computes (GPT-2 merges untie the adapted head);
    /// before, c_proj was merged transposed (2.98 logits off) and Llama's square projections too
    /// (1.69 off). Packs imported with and without --base alike.
    @Test(arguments: cases, [false, true])
    func mergeKeepsTheAdaptersFunction(caseName: String, withBase: Bool) throws {
        let folder = try Self.merge(try Self.pack(caseName, withBase: withBase), caseName)
        let comparison = try Self.compare(model: folder, with: "output_adapter", of: caseName)
        #expect(comparison.passed, "\(caseName): max abs \(comparison.maxAbsError)")
    }

    /// --tied-embeddings keep gives PEFT's merge_and_unload (LoRA on the tied head moves the shared
    /// weight). Control: that result is > 1 logit from the adapter's output, so it is a distinct check.
    @Test(arguments: gpt2Cases)
    func keepEqualsPeftMerge(caseName: String) throws {
        #expect(try Self.outputGap(caseName, "output_peft_merged", "output_adapter") > 1)
        let folder = try Self.merge(try Self.pack(caseName, withBase: true), caseName, policy: .keep)
        let comparison = try Self.compare(model: folder, with: "output_peft_merged", of: caseName)
        #expect(comparison.passed, "\(caseName): max abs \(comparison.maxAbsError)")
    }

    /// A pack that recorded the config's fan_in_fan_out (as peftpack did before) is corrected by
    /// the base at merge, not trusted. Control: the adapter moves the logits by more than 1, so a
    /// transposed square delta would be caught.
    @Test(arguments: ["gpt2_cproj_head", "llama_fifo_true"])
    func aWronglyRecordedLayoutIsCorrectedByTheBase(caseName: String) throws {
        #expect(try Self.outputGap(caseName, "output_base", "output_adapter") > 1)
        let good = try Self.pack(caseName, withBase: false)
        let reader = try PackReader(path: good)
        var document = try reader.adapterDocument()
        let wrong: WeightLayout = caseName == "llama_fifo_true" ? .conv1d : .linear
        for index in document.adapters[0].modules.indices where !document.adapters[0].modules[index].isWholeTensor {
            document.adapters[0].modules[index] = document.adapters[0].modules[index].withLayout(wrong)
        }
        let tensors = try reader.tensors.map { ($0.name, try reader.readTensor($0.name)) }
        let stale = Fixtures.temporaryDirectory() + "/stale.peftpack"
        try PackWriter.write(tensors, document: document, to: stale, options: .init(level: 3))
        #expect(try Self.layouts(stale).values.allSatisfy { $0 == wrong })
        let folder = try Self.merge(stale, caseName)
        let comparison = try Self.compare(model: folder, with: "output_adapter", of: caseName)
        #expect(comparison.passed, "\(caseName): max abs \(comparison.maxAbsError)")
    }

    /// extract --embeddings lora of a tied GPT-2 fine-tune factors wpe too; verify runs it (it
    /// refused "transformer.wpe is not a module of this model") and at full rank reproduces the
    /// fine-tune transformers computed.
    @Test func extractedPositionEmbeddingLoRARuns() throws {
        let base = Fixtures.path("models/gpt2-tiny")
        let finetuned = Fixtures.path("tied/models/gpt2-tiny-ft")
        let pack = Fixtures.temporaryDirectory() + "/extracted.peftpack"
        _ = try Extract.run(base: base, finetuned: finetuned, output: pack,
                            options: .init(rule: .fixed(64), embeddings: .lora, exact: true))
        let modules = try PackReader(path: pack).adapterDocument().adapters[0].modules
        #expect(modules.contains { $0.target.hasSuffix("wpe") && $0.layout == .embedding })
        let report = try Verify.run(pack: pack, base: base, adapterNames: [],
                                    targets: [.reference(path: finetuned + ".ref.safetensors", key: "output_adapter")],
                                    inputShape: (2, 7), seed: 0, tolerance: Self.tolerance)
        #expect(report.passed, "max abs \(report.comparisons[0].maxAbsError)")
    }

    /// GGUF export names the whole tensor PEFT saved beside a LoRA on lm_head for what it is (the
    /// base layer's weight), not a modules_to_save copy, when it cannot show it unchanged (no base
    /// recorded against another checkpoint of the same shapes, the GPT-2 fine-tune). With its own
    /// base recorded, the copy of GPT-2's tied head is found under wte, where the pack records it,
    /// and dropped.
    @Test func ggufRefusalSaysWhatTheWholeTensorIs() throws {
        let exported = try PackExport.run(pack: try Self.pack("gpt2_cproj_head", withBase: true),
                                          output: Fixtures.temporaryDirectory() + "/recorded.gguf", format: .gguf, name: nil, force: false)
        #expect(exported.tensors > 0)
        let pack = Fixtures.temporaryDirectory() + "/other-base.peftpack"
        _ = try PackImport.run(sources: [.init(path: Self.adapterFolder("gpt2_cproj_head"), name: nil)], output: pack,
                               baseFolder: Fixtures.path("tied/models/gpt2-tiny-ft"), level: 3)
        let output = Fixtures.temporaryDirectory() + "/out.gguf"
        #expect {
            _ = try PackExport.run(pack: pack, output: output, format: .gguf, name: nil, force: false)
        } throws: { error in
            let text = "\(error)"
            return text.contains("lm_head.base_layer.weight") && text.contains("save_embedding_layers") && !text.contains("(modules_to_save)")
        }
    }
}
