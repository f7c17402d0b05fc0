import Foundation
import Testing
@testable import PeftPack

/// `inspect` of a model folder against what transformers itself reports for it
/// (fixtures/data/inspect/reference.json, made by fixturegen/inspect_models.py: num_parameters(),
/// the resolved tie_word_embeddings, the loaded head, layers, stored dtypes, shards). Counts are
/// integers: they must match exactly.
@Suite struct InspectModelTests {
    struct Reference: Decodable {
        var architecture: String
        var model_type: String
        var num_parameters: Int
        var tie_word_embeddings: Bool
        var head_is_input_embedding: Bool
        var num_hidden_layers: Int
        var stored_dtypes: [String]
        var shards: Int
    }

    static let references: [String: Reference] = {
        let data = try! Data(contentsOf: Fixtures.data.appendingPathComponent("inspect/reference.json"))
        return try! JSONDecoder().decode([String: Reference].self, from: data)
    }()

    static func inspectJSON(_ folder: String) throws -> [String: Any] {
        let result = try CLI.run(["inspect", Fixtures.path(folder), "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        return report["model"] as! [String: Any]
    }

    @Test(arguments: references.keys.sorted())
    func modelSummaryMatchesTransformers(folder: String) throws {
        let reference = Self.references[folder]!
        let model = try Self.inspectJSON(folder)
        #expect(model["parameters"] as? Int == reference.num_parameters, "\(folder): parameters")
        #expect(model["tieWordEmbeddings"] as? Bool == reference.tie_word_embeddings, "\(folder): tie")
        #expect(model["layers"] as? Int == reference.num_hidden_layers)
        #expect(model["architecture"] as? String == reference.architecture)
        #expect(model["modelType"] as? String == reference.model_type)
        #expect(model["shards"] as? Int == reference.shards)
        #expect(Set(model["dtypes"] as? [String] ?? []) == Set(reference.stored_dtypes))
    }

    /// The legacy GPT-2 stores lm_head.weight beside wte and omits tie_word_embeddings; transformers
    /// ties them (GPT2Config's default) and counts the shared matrix once, and ignores the stored
    /// causal-mask buffers. Negative control: counting every stored element, as inspect did, is
    /// off by the head and the buffers.
    @Test func legacyGPT2CountsTheTiedHeadOnceAndNoBuffers() throws {
        let reference = Self.references["inspect/gpt2-legacy"]!
        #expect(reference.head_is_input_embedding && reference.tie_word_embeddings)
        let model = try Self.inspectJSON("inspect/gpt2-legacy")
        #expect(model["outputHead"] as? String == "lm_head.weight")
        #expect((model["buffers"] as? [String])?.count == 4)
        let checkpoint = try Checkpoint(path: Fixtures.path("inspect/gpt2-legacy"))
        let everyElement = checkpoint.infos.reduce(0) { $0 + ($1.elementCount ?? 0) }
        #expect(everyElement != reference.num_parameters)
        #expect(model["parameters"] as? Int == reference.num_parameters)
    }

    @Test func textReportNamesArchitectureTieAndShards() throws {
        let result = try CLI.run(["inspect", Fixtures.path("models/llama-tiny-bf16")])
        #expect(result.status == 0)
        let line = result.stdout.split(separator: "\n").first { $0.contains("model:") }.map(String.init) ?? ""
        let reference = Self.references["models/llama-tiny-bf16"]!
        #expect(line.contains("LlamaForCausalLM") && line.contains("\(reference.num_parameters) parameters"), "\(line)")
        #expect(line.contains("untied") && line.contains("lm_head.weight stored") && line.contains("sharded in \(reference.shards) files"), "\(line)")
    }
}
