import Foundation
import Testing
@testable import PeftPack

/// Bases whose lm_head is the token embedding (fixtures/data/tied, made with transformers 5 and
/// PEFT 0.21): the runtime, merge (both policies) and extract against what PEFT and transformers
/// computed. Tolerance: 1e-5 of the reference's largest magnitude, as PipelineVerifyTests (fp32 on
/// both sides, different summation order; observed ≤ 1e-6 relative).
@Suite struct TiedEmbeddingTests {
    static let tolerance = Verify.Tolerance(absolute: 0, relative: 1e-5)
    static let cases = ["qwen2_tied_modules_to_save_embed", "qwen2_tied_lora_embed", "qwen2_tied_lora_head",
                        "qwen2_tied_modules_to_save_head", "qwen2_tied_lora_embed_ensure_tying", "gpt2_tied_lora_wte"]
    /// The cases where head and embedding end up different, so the function needs them untied.
    static let untying = cases.filter { $0 != "qwen2_tied_lora_embed_ensure_tying" }
    /// LoRA on one side of the tie: PEFT's merge_and_unload adds it to the shared weight.
    static let loraOnOneSide = ["qwen2_tied_lora_embed", "qwen2_tied_lora_head", "gpt2_tied_lora_wte"]

    static func reference(_ caseName: String) -> String { Fixtures.path("tied/cases/\(caseName)/\(caseName).ref.safetensors") }

    static func base(_ caseName: String) throws -> String {
        Fixtures.path(try SafetensorsFile(path: reference(caseName)).metadata!["base"]!)
    }

    static func pack(_ caseName: String) throws -> String {
        let output = Fixtures.temporaryDirectory() + "/\(caseName).peftpack"
        _ = try PackImport.run(sources: [.init(path: Fixtures.path("tied/cases/\(caseName)/adapter"), name: nil)], output: output,
                               baseFolder: try base(caseName), level: 3)
        return output
    }

    static func merge(_ caseName: String, policy: TiedEmbeddingsPolicy) throws -> (folder: String, report: Merge.Report) {
        let output = Fixtures.temporaryDirectory() + "/merged"
        let report = try Merge.run(base: try base(caseName), inputs: [MergeInput(pack: try pack(caseName), adapter: nil, weight: 1)],
                                   output: output, options: .init(tiedEmbeddings: policy))
        return (output, report)
    }

    /// A model folder's logits on the reference ids, compared with one of the reference's outputs.
    static func compare(model folder: String, with key: String, of caseName: String) throws -> Verify.Comparison {
        let (model, _) = try Verify.loadModel(folder)
        return try ReferenceFile(path: reference(caseName)).compare(model, with: key, label: key, tolerance: tolerance)
    }

    static func outputGap(_ caseName: String, _ a: String, _ b: String) throws -> Double {
        let file = try SafetensorsFile(path: reference(caseName))
        return zip(try file.tensor(a).floats(), try file.tensor(b).floats()).map { Double(abs($0 - $1)) }.max() ?? 0
    }

    static func tieInConfig(_ folder: String) throws -> Bool? {
        let json = try StrictJSON.parse(Array(try Data(contentsOf: URL(fileURLWithPath: folder + "/config.json"))))
        if case .bool(let value)? = json["tie_word_embeddings"] { return value }
        return nil
    }

    /// Importing with --base accepts lm_head targets of a tied base (it used to refuse them as a
    /// tensor the base "does not have"), and the runtime computes what PEFT computes.
    @Test(arguments: cases)
    func runtimeMatchesPeft(caseName: String) throws {
        let report = try Verify.run(pack: try Self.pack(caseName), base: try Self.base(caseName), adapterNames: [],
                                    targets: [.reference(path: Self.reference(caseName), key: "output_adapter")],
                                    inputShape: (2, 7), seed: 0, tolerance: Self.tolerance)
        #expect(report.passed, "\(caseName): max rel \(report.comparisons[0].maxRelError)")
    }

    /// Default merge: lm_head.weight written, tie_word_embeddings false, and the merged model
    /// (run by the Swift runtime; tests/python checks transformers) gives PEFT's adapter output.
    @Test(arguments: untying)
    func defaultMergeUntiesAndKeepsTheAdaptersFunction(caseName: String) throws {
        let (folder, report) = try Self.merge(caseName, policy: .untie)
        #expect(report.tiedEmbeddings?.outcome == "untied")
        #expect(try Self.tieInConfig(folder) == false)
        #expect(try Checkpoint(path: folder).info("lm_head.weight") != nil)
        let comparison = try Self.compare(model: folder, with: "output_adapter", of: caseName)
        #expect(comparison.passed, "\(caseName): max abs \(comparison.maxAbsError)")
    }

    /// keep: one shared tensor, PEFT's merge_and_unload result for LoRA, with its cost reported.
    /// Negative control: that result is > 1 logit from the adapter's, so the untie test above
    /// would fail on it.
    @Test(arguments: loraOnOneSide)
    func keepEqualsPeftMergeAndReportsItsCost(caseName: String) throws {
        #expect(try Self.outputGap(caseName, "output_peft_merged", "output_adapter") > 1)
        let (folder, report) = try Self.merge(caseName, policy: .keep)
        let tie = try #require(report.tiedEmbeddings)
        #expect(tie.outcome == "kept")
        #expect(max(tie.headMaxAbsError ?? 0, tie.embeddingMaxAbsError ?? 0) > 0.01)
        #expect(try Self.tieInConfig(folder) != false)
        #expect(try Checkpoint(path: folder).info("lm_head.weight") == nil)
        let comparison = try Self.compare(model: folder, with: "output_peft_merged", of: caseName)
        #expect(comparison.passed, "\(caseName): max abs \(comparison.maxAbsError)")
    }

    /// verify --merged against a bf16 merge of a tied base: the rounding bound is taken from the
    /// correct (untied) merge, so the untied merge passes at the default tolerance and the kept tie,
    /// whose head moved with the embedding (PEFT's merge: more than 1 logit from the adapter's
    /// output on the reference), fails. A bound taken from a merge that keeps the tie would be as
    /// wide as that change and pass it.
    @Test(arguments: loraOnOneSide)
    func mergedToleranceOnATiedBaseComesFromTheUntiedMerge(caseName: String) throws {
        #expect(try Self.outputGap(caseName, "output_peft_merged", "output_adapter") > 1)
        let pack = try Self.pack(caseName)
        func verify(_ policy: TiedEmbeddingsPolicy) throws -> Verify.Comparison {
            let output = Fixtures.temporaryDirectory() + "/merged"
            _ = try Merge.run(base: try Self.base(caseName), inputs: [MergeInput(pack: pack, adapter: nil, weight: 1)], output: output,
                              options: .init(dtype: .bf16, tiedEmbeddings: policy))
            let report = try Verify.run(pack: pack, base: try Self.base(caseName), adapterNames: [], targets: [.merged(folder: output)],
                                        inputShape: (2, 16), seed: 1)
            return try #require(report.comparisons.first)
        }
        let untied = try verify(.untie)
        #expect(untied.passed, "\(caseName): untied bf16 merge max abs \(untied.maxAbsError), allowed \(untied.allowedAbsError)")
        let kept = try verify(.keep)
        #expect(!kept.passed, "\(caseName): kept tie max abs \(kept.maxAbsError) passed within \(kept.allowedAbsError)")
        #expect((kept.rounding?.ratio ?? 0) > MergedTolerance.multiple)
        // The weights decide it too, where a requantized model's wide output bound could not: both
        // sides of the pair are compared, the kept tie's in the one tensor it holds.
        #expect(untied.weights?.passed == true && untied.weights?.notCompared.isEmpty == true, "\(String(describing: untied.weights))")
        #expect(kept.weights?.passed == false, "\(caseName): the kept tie's weights passed")
    }

    /// With ensure_weight_tying PEFT saves the same change for head and embedding: the tie is
    /// kept at no cost under either policy, and the merge computes the adapter (PEFT's own merge
    /// adds the change to the shared weight twice: 8 logits off).
    @Test(arguments: [TiedEmbeddingsPolicy.untie, .keep])
    func ensureWeightTyingKeepsTheTieAtNoCost(policy: TiedEmbeddingsPolicy) throws {
        let caseName = "qwen2_tied_lora_embed_ensure_tying"
        #expect(try Self.outputGap(caseName, "output_peft_merged", "output_adapter") > 1)
        let (folder, report) = try Self.merge(caseName, policy: policy)
        #expect(report.tiedEmbeddings?.outcome == "kept-identical")
        #expect(try Self.tieInConfig(folder) == true)
        let comparison = try Self.compare(model: folder, with: "output_adapter", of: caseName)
        #expect(comparison.passed, "max abs \(comparison.maxAbsError)")
    }

    /// The CLI never keeps a costly tie silently: a warning with the cost on stderr.
    @Test func keepWarnsOnStderr() throws {
        let caseName = "qwen2_tied_lora_embed"
        let output = Fixtures.temporaryDirectory() + "/merged"
        let result = try CLI.run(["merge", "--base", try Self.base(caseName), try Self.pack(caseName), "-o", output,
                                  "--tied-embeddings", "keep", "--quiet"])
        #expect(result.status == 0)
        #expect(result.stderr.contains("warning: the tie of lm_head.weight and model.embed_tokens.weight is kept"))
        let bad = try CLI.run(["merge", "--base", try Self.base(caseName), try Self.pack(caseName), "-o", output + "2",
                               "--tied-embeddings", "both"])
        #expect(bad.status != 0 && bad.stderr.contains("tied-embeddings"))
    }

    /// At full rank an extract of a tied fine-tune reproduces it (the head follows the
    /// embedding); before, the head kept the base embedding: 1.17 (Qwen2) and 1.59 (GPT-2) logits off.
    @Test(arguments: [("qwen2-tied-tiny", "full"), ("qwen2-tied-tiny", "lora"), ("gpt2-tiny", "full")])
    func fullRankExtractReproducesTiedFineTune(model: String, embeddings: String) throws {
        let base = Fixtures.path(model == "gpt2-tiny" ? "models/gpt2-tiny" : "tied/models/\(model)")
        let finetuned = Fixtures.path("tied/models/\(model)-ft")
        let pack = Fixtures.temporaryDirectory() + "/extracted.peftpack"
        _ = try Extract.run(base: base, finetuned: finetuned, output: pack,
                            options: .init(rule: .fixed(64), embeddings: Extract.EmbeddingPolicy(rawValue: embeddings)!, exact: true))
        let adapter = try PackReader(path: pack).adapterDocument().adapters[0]
        #expect(adapter.modules.contains { $0.target.hasPrefix("lm_head") })
        let report = try Verify.run(pack: pack, base: base, adapterNames: [],
                                    targets: [.reference(path: finetuned + ".ref.safetensors", key: "output_adapter")],
                                    inputShape: (2, 7), seed: 0, tolerance: Self.tolerance)
        #expect(report.passed, "max abs \(report.comparisons[0].maxAbsError)")
        #expect(report.comparisons[0].top1Agreement == 1)
    }

    /// transformers 5's per-class defaults when config.json omits tie_word_embeddings.
    @Test func tieFollowsConfigAndFamilyDefaults() throws {
        func tie(_ json: String) -> Bool { EmbeddingTie(config: try? StrictJSON.parse(Array(json.utf8)), tensorNames: ["model.embed_tokens.weight", "transformer.wte.weight"]) != nil }
        #expect(tie(#"{"model_type": "gpt2"}"#))
        #expect(tie(#"{"model_type": "gemma"}"#))
        #expect(!tie(#"{"model_type": "llama"}"#))
        #expect(!tie(#"{"model_type": "qwen2"}"#))
        #expect(tie(#"{"model_type": "qwen2", "tie_word_embeddings": true}"#))
        #expect(!tie(#"{"model_type": "gpt2", "tie_word_embeddings": false}"#))
        let base = try BaseModel(folder: Fixtures.path("tied/models/qwen2-tied-tiny"))
        #expect(base.tie == EmbeddingTie(config: .object([("tie_word_embeddings", .bool(true))]), tensorNames: ["model.embed_tokens.weight"]))
        #expect(base.resolve("lm_head.weight") == "lm_head.weight")
        #expect(base.info("lm_head.weight")?.shape == [256, 64])
        #expect(try BaseModel(folder: Fixtures.path("models/llama-tiny")).tie == nil)
    }

    @Test func untiedConfigChangesOnlyTheTie() {
        #expect(TiedMerge.untiedConfig("{\n  \"a\": 1,\n  \"tie_word_embeddings\": true\n}\n") == "{\n  \"a\": 1,\n  \"tie_word_embeddings\": false\n}\n")
        #expect(TiedMerge.untiedConfig("{\n  \"model_type\": \"gpt2\"\n}\n") == "{\n  \"tie_word_embeddings\": false,\n  \"model_type\": \"gpt2\"\n}\n")
    }
}
