import Foundation
import Testing
@testable import PeftPack

/// config.json goes through the strict parser in the runtime as everywhere else. Python's json
/// (so transformers' PretrainedConfig) keeps the last of two duplicate keys while JSONDecoder kept
/// the first: the runtime and transformers would have run different models from one file.
@Suite("config.json read strictly")
struct StrictConfigJSONTests {
    private func decode(_ json: String) throws -> ModelConfig {
        try ModelConfig.decode(Data(json.utf8))
    }

    private func failure(_ json: String) -> String? {
        do {
            _ = try decode(json)
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test func duplicateKeyIsRefusedNamingIt() {
        let message = failure(#"{"model_type": "llama", "hidden_size": 64, "hidden_size": 128, "num_attention_heads": 4}"#)
        #expect(message?.hasPrefix("config.json: not a JSON object (invalid JSON at byte ") == true)
        #expect(message?.contains(#"duplicate key "hidden_size""#) == true, "\(message ?? "accepted")")
    }

    @Test func duplicateKeyInsideRopeDictionaryIsRefused() {
        let message = failure(#"{"model_type": "llama", "rope_scaling": {"rope_type": "linear", "factor": 2, "factor": 4}}"#)
        #expect(message?.contains(#"duplicate key "factor""#) == true, "\(message ?? "accepted")")
    }

    @Test func wrongTypesNameTheirPath() {
        #expect(failure(#"{"model_type": "llama", "rope_scaling": {"rope_type": "linear", "factor": "2"}}"#)
            == "config.json: field rope_scaling.factor has the wrong type")
        #expect(failure(#"{"model_type": "bert", "id2label": {"0": "A", "1": 7}}"#)
            == "config.json: field id2label.1 has the wrong type")
        #expect(failure(#"{"model_type": "llama", "tie_word_embeddings": 1}"#)
            == "config.json: field tie_word_embeddings has the wrong type")
        #expect(failure(#"{"model_type": "llama", "hidden_size": 64.5}"#) == "config.json: field hidden_size has the wrong type")
        #expect(failure(#"{"model_type": "llama", "rms_norm_eps": 1e400}"#) == "config.json: field rms_norm_eps has the wrong type")
        #expect(failure("[1, 2]") == "config.json: not a JSON object")
        #expect(failure(#"{"model_type": "llama""#)?.hasPrefix("config.json: not a JSON object (invalid JSON") == true)
    }

    /// What JSONDecoder accepted and transformers reads the same way stays accepted: nulls take the
    /// default, integral floats are integers, integers are doubles.
    @Test func lenienciesTransformersSharesAreKept() throws {
        let config = try decode(#"""
            {"model_type": "llama", "hidden_size": 64.0, "num_attention_heads": 4, "num_hidden_layers": null,
             "rope_theta": 500000, "rms_norm_eps": 1e-5, "architectures": ["LlamaForCausalLM"],
             "rope_scaling": {"rope_type": "llama3", "factor": 8, "low_freq_factor": 1, "high_freq_factor": 4,
                              "original_max_position_embeddings": 8192.0}}
            """#)
        #expect(config.hiddenSize == 64 && config.numLayers == 32 && config.architecture == "LlamaForCausalLM")
        #expect(config.rope?.theta == 500_000 && config.rope?.factor == 8 && config.rope?.originalMaxPositionEmbeddings == 8192)
        let mistral = try decode(#"{"model_type": "mistral", "sliding_window": null, "num_attention_heads": 32}"#)
        #expect(mistral.slidingWindow == nil && mistral.slidingWindowLayers.isEmpty)
    }

    /// Stacking prompt adapters rewrites the stored PEFT config with the summed token count and
    /// keeps every other member as it was.
    @Test func stackedPromptConfigKeepsEveryOtherMember() throws {
        let original = try PipelineVerifyTests.pack("llama_prompt_tuning")
        let (stacked, _) = try StackTests.stack([(original, 1), (original, 1)])
        func config(_ pack: String) throws -> [(key: String, value: StrictJSON)] {
            let text = try #require(try PackReader(path: pack).adapterDocument().adapters[0].source?.configText)
            return try #require(try StrictJSON.parse(Array(text.utf8)).objectMembers)
        }
        let before = try config(original), after = try config(stacked)
        let tokens = try #require(before.first { $0.key == "num_virtual_tokens" }?.value.integerValue)
        #expect(after.first { $0.key == "num_virtual_tokens" }?.value == .integer(2 * tokens))
        let unchanged = { (members: [(key: String, value: StrictJSON)]) in
            StrictJSON.object(members.filter { $0.key != "num_virtual_tokens" }).canonicalBytes()
        }
        #expect(unchanged(after) == unchanged(before))
    }
}
