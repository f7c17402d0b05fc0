import Foundation
import Testing
@testable import PeftPack

/// Extract and merge on base/fine-tune pairs saved by different transformers versions
/// (fixtures/data/buffers, inspect/gpt2-legacy against tied/models/gpt2-tiny-ft): one side stores
/// buffers (position ids, rotary inv_freq, GPT-2's causal masks) or a copy of the tied head and the
/// other does not. References are the fine-tune's outputs and weights as transformers 5 loads them.
@Suite struct CheckpointBufferTests {
    struct Pair: CustomTestStringConvertible, Sendable {
        var base: String
        var finetuned: String
        var reference: String
        /// What the report must list as left out, in order.
        var ignored: [(tensor: String, side: String)]
        var testDescription: String { finetuned }
    }

    static let bert = Pair(base: "buffers/bert-base", finetuned: "buffers/bert-finetuned", reference: "buffers/bert-finetuned.ref.safetensors",
                           ignored: [("embeddings.position_ids", "base")])
    static let llama = Pair(base: "buffers/llama-base", finetuned: "buffers/llama-finetuned", reference: "buffers/llama-finetuned.ref.safetensors",
                            ignored: [("lm_head.weight", "fine-tune"), ("model.layers.0.self_attn.rotary_emb.inv_freq", "fine-tune"),
                                      ("model.layers.1.self_attn.rotary_emb.inv_freq", "fine-tune")])
    static let gpt2 = Pair(base: "inspect/gpt2-legacy", finetuned: "tied/models/gpt2-tiny-ft", reference: "tied/models/gpt2-tiny-ft.ref.safetensors",
                           ignored: [("lm_head.weight", "base"), ("transformer.h.0.attn.masked_bias", "base"), ("transformer.h.1.attn.masked_bias", "base"),
                                     ("transformer.h.0.attn.bias", "base"), ("transformer.h.1.attn.bias", "base")])

    /// fp32 summation-order differences between peftpack's runtime and transformers, plus the
    /// full-rank SVD's fp32 round-off (measured ≤ 1e-6 relative here).
    static let tolerance = Verify.Tolerance(absolute: 0, relative: 1e-5)

    static func extract(_ pair: Pair, to pack: String) throws -> Extract.Report {
        try Extract.run(base: Fixtures.path(pair.base), finetuned: Fixtures.path(pair.finetuned), output: pack,
                        options: .init(rule: .fixed(64), exact: true))
    }

    /// The pair is accepted, the report names each one-sided tensor, and the extracted adapter
    /// applied to the base gives the fine-tune's output as transformers computes it. Before, all
    /// three were refused ("lacks tensor embeddings.position_ids", "has its own lm_head.weight").
    @Test(arguments: [bert, llama, gpt2])
    func extractLeavesOutOneSidedBuffersAndHeadCopies(pair: Pair) throws {
        let pack = Fixtures.temporaryDirectory() + "/extracted.peftpack"
        let report = try Self.extract(pair, to: pack)
        #expect(report.ignored.map(\.tensor) == pair.ignored.map(\.tensor))
        for (ignored, expected) in zip(report.ignored, pair.ignored) {
            #expect(ignored.reason.hasSuffix("only the \(expected.side) stores it"), "\(ignored.reason)")
        }
        let verified = try Verify.run(pack: pack, base: Fixtures.path(pair.base), adapterNames: [],
                                      targets: [.reference(path: Fixtures.path(pair.reference), key: "output_adapter")],
                                      inputShape: (2, 7), seed: 0, tolerance: Self.tolerance)
        #expect(verified.passed, "max rel \(verified.comparisons[0].maxRelError)")
        // Negative control: the reference is the fine-tune's, far from the base's output.
        let unchanged = try Verify.run(pack: pack, base: Fixtures.path(pair.base), adapterNames: [],
                                       targets: [.reference(path: Fixtures.path(pair.reference), key: "output_base")],
                                       inputShape: (2, 7), seed: 0, tolerance: Self.tolerance)
        #expect(!unchanged.passed && unchanged.comparisons[0].maxRelError > 1e-2)
    }

    /// The report's ignored list is in the JSON the CLI prints.
    @Test func extractReportsIgnoredTensorsInJSON() throws {
        let pack = Fixtures.temporaryDirectory() + "/extracted.peftpack"
        let result = try CLI.run(["extract", "--base", Fixtures.path(Self.bert.base), "--finetuned", Fixtures.path(Self.bert.finetuned),
                                  "-o", pack, "--rank", "4", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let json = try StrictJSON.parse(Array(result.stdout.utf8))
        #expect(json["ignored"]?.arrayValue?.first?["tensor"]?.stringValue == "embeddings.position_ids")
        let text = try CLI.run(["extract", "--base", Fixtures.path(Self.bert.base), "--finetuned", Fixtures.path(Self.bert.finetuned),
                                "-o", pack, "--rank", "4", "--force"])
        #expect(text.stdout.contains("left out: embeddings.position_ids"), "\(text.stdout)")
    }

    /// A real parameter on one side only is still refused, naming it, whichever side stores it.
    @Test func extractRefusesAParameterOnOneSide() throws {
        let folder = Fixtures.temporaryDirectory() + "/finetuned"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let source = Fixtures.path(Self.bert.finetuned)
        try FileManager.default.copyItem(atPath: source + "/config.json", toPath: folder + "/config.json")
        let checkpoint = try Checkpoint(path: source)
        var tensors: [String: HostTensor] = [:]
        for name in checkpoint.names where name != "encoder.layer.0.output.LayerNorm.weight" { tensors[name] = try checkpoint.tensor(name) }
        try SafetensorsWriter.write(tensors, metadata: ["format": "pt"], to: folder + "/model.safetensors")
        let pack = Fixtures.temporaryDirectory() + "/extracted.peftpack"
        #expect {
            try Extract.run(base: Fixtures.path(Self.bert.base), finetuned: folder, output: pack, options: .init(rule: .fixed(4)))
        } throws: { error in
            "\(error)".contains("lacks tensor encoder.layer.0.output.LayerNorm.weight")
        }
        #expect {
            try Extract.run(base: folder, finetuned: Fixtures.path(Self.bert.finetuned), output: pack, options: .init(rule: .fixed(4)))
        } throws: { error in
            "\(error)".contains("has tensor encoder.layer.0.output.LayerNorm.weight")
        }
        #expect(!FileManager.default.fileExists(atPath: pack))
    }

    /// A fine-tune that ties its head (saving none) to an untied base's own head is refused as
    /// what it is, not as another architecture ("lacks tensor lm_head.weight" before).
    @Test func extractRefusesATiedFineTuneOfAnUntiedBase() throws {
        let folder = Fixtures.temporaryDirectory() + "/tied-finetune"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let source = Fixtures.path("models/llama-tiny-ft")
        var config = try String(contentsOfFile: source + "/config.json", encoding: .utf8)
        config = config.replacingOccurrences(of: #""tie_word_embeddings": false"#, with: #""tie_word_embeddings": true"#)
        #expect(config.contains(#""tie_word_embeddings": true"#))
        try config.write(toFile: folder + "/config.json", atomically: true, encoding: .utf8)
        let checkpoint = try Checkpoint(path: source)
        var tensors: [String: HostTensor] = [:]
        for name in checkpoint.names where name != "lm_head.weight" { tensors[name] = try checkpoint.tensor(name) }
        try SafetensorsWriter.write(tensors, metadata: ["format": "pt"], to: folder + "/model.safetensors")
        #expect {
            try Extract.run(base: Fixtures.path("models/llama-tiny"), finetuned: folder, output: Fixtures.temporaryDirectory() + "/x.peftpack",
                            options: .init(rule: .fixed(4)))
        } throws: { error in
            "\(error)".contains("ties lm_head.weight to model.embed_tokens.weight (tie_word_embeddings true) but the base")
        }
    }

    /// Merging the extracted adapter into the base gives the fine-tune's weights. A tied base that
    /// stores a copy of the head gets the merged head in it: transformers loads the copy into the
    /// shared weight, so the base's stale copy (written before) put GPT-2's logits 1.59 off.
    @Test(arguments: [bert, llama, gpt2])
    func mergeOfTheExtractReproducesTheFineTune(pair: Pair) throws {
        let pack = Fixtures.temporaryDirectory() + "/extracted.peftpack"
        _ = try Self.extract(pair, to: pack)
        let merged = Fixtures.temporaryDirectory() + "/merged"
        let report = try Merge.run(base: Fixtures.path(pair.base), inputs: [MergeInput(pack: pack, adapter: nil, weight: 1)], output: merged,
                                   options: .init())
        let output = try Checkpoint(path: merged), finetuned = try Checkpoint(path: Fixtures.path(pair.finetuned))
        let base = try Checkpoint(path: Fixtures.path(pair.base))
        // The merged model has the base's tensors: its buffers and head copy stay, none is added.
        #expect(Set(output.names) == Set(base.names))
        let tie = try BaseModel(folder: Fixtures.path(pair.base)).tie
        for name in output.names where !pair.ignored.contains(where: { $0.tensor == name }) {
            let expected = try finetuned.tensor(name).floats(), actual = try output.tensor(name).floats()
            let scale = expected.map { abs(Double($0)) }.max() ?? 0
            let largest = zip(expected, actual).map { abs(Double($0) - Double($1)) }.max() ?? 0
            // fp32 round-off of a full-rank SVD reconstruction: ≤ 1e-6 of the weights' scale measured.
            #expect(largest <= 1e-5 * max(scale, 1), "\(name): \(largest)")
        }
        if let tie, base.info(tie.head) != nil {
            #expect(report.tiedEmbeddings?.storedHeadCopy == true)
            #expect(try output.tensor(tie.head).bytes == output.tensor(tie.embedding).bytes)
        } else {
            #expect(report.tiedEmbeddings?.storedHeadCopy != true)
        }
    }

    /// inspect counts parameters as transformers' num_parameters() does (buffers/parameters.json):
    /// the rotary inv_freq the Llama fine-tune stores is a buffer (counted before: 26792 for 26784).
    @Test(arguments: ["bert-base", "bert-finetuned", "llama-base", "llama-finetuned"])
    func inspectCountsNoBufferAsAParameter(folder: String) throws {
        let expected = try StrictJSON.parse(Array(Data(contentsOf: URL(fileURLWithPath: Fixtures.path("buffers/parameters.json")))))
        let model = try BaseModel(folder: Fixtures.path("buffers/\(folder)"))
        let summary = ModelSummary(checkpoint: model.checkpoint, identity: model.identity, configText: model.checkpoint.configText)
        #expect(summary.parameters == expected[folder]?.integerValue.map(Int.init))
    }

    /// Embeddings, heads and buffers come from the base's architecture; names alone decide only for
    /// a family not in the registry.
    @Test func tensorClassesComeFromTheArchitecture() {
        let llama = TensorClasses(modelType: "llama", className: nil)
        #expect(llama.isEmbeddingTable("model.embed_tokens.weight"))
        #expect(llama.isOutputHead("lm_head.weight"))
        #expect(!llama.isEmbedding("model.layers.0.self_attn.q_proj.weight"))
        #expect(llama.isBuffer("model.layers.0.self_attn.rotary_emb.inv_freq"))
        let bert = TensorClasses(modelType: nil, className: "BertForSequenceClassification")
        #expect(bert.isEmbeddingTable("bert.embeddings.position_embeddings.weight"))
        #expect(bert.isBuffer("bert.embeddings.token_type_ids"))
        #expect(bert.outputHeadWeights.isEmpty)
        let gpt2 = TensorClasses(modelType: "gpt2", className: nil)
        #expect(gpt2.isEmbeddingTable("transformer.wpe.weight") && gpt2.isBuffer("transformer.h.3.attn.masked_bias"))
        #expect(!gpt2.isBuffer("transformer.h.3.attn.c_attn.bias"))
        let opt = TensorClasses(modelType: "opt", className: "OPTForCausalLM")
        #expect(opt.architecture == nil)
        #expect(opt.isEmbeddingTable("model.decoder.embed_positions.weight"))
        #expect(opt.isBuffer("model.decoder.layers.0.self_attn.rotary_emb.inv_freq"))
        #expect(!opt.isBuffer("model.decoder.layers.0.self_attn.k_proj.bias"))
    }
}
