import Foundation
import Testing
@testable import PeftPack

@Suite("Runtime model config")
struct RuntimeConfigTests {
    private func decode(_ json: String) throws -> ModelConfig {
        try ModelConfig.decode(Data(json.utf8))
    }

    @Test("fixture configs decode as transformers reads them")
    func fixtureConfigs() throws {
        try #require(RuntimeFixtures.available, "fixtures/data is missing")
        let llama = try RuntimeFixtures.config("llama-tiny")
        #expect(llama.family == .llama && llama.numKeyValueHeads == 2 && llama.headDim == 16)
        #expect(llama.rope?.type == .standard && llama.rope?.theta == 10_000 && !llama.tieWordEmbeddings)
        let gpt2 = try RuntimeFixtures.config("gpt2-tiny")
        #expect(gpt2.hiddenSize == 64 && gpt2.numLayers == 2 && gpt2.intermediateSize == 256)
        #expect(gpt2.activation == "gelu_new" && gpt2.normEpsilon == 1e-5 && gpt2.tieWordEmbeddings)
        let bert = try RuntimeFixtures.config("bert-tiny")
        #expect(bert.normEpsilon == 1e-12 && bert.activation == "gelu" && bert.typeVocabSize == 2)
    }

    @Test("missing fields take the config classes' defaults")
    func defaults() throws {
        let bert = try decode(#"{"model_type": "bert"}"#)
        #expect(bert.hiddenSize == 768 && bert.numLayers == 12 && bert.maxPositionEmbeddings == 512)
        let mistral = try decode(#"{"model_type": "mistral", "hidden_size": 512, "num_attention_heads": 32}"#)
        #expect(mistral.numKeyValueHeads == 8 && mistral.slidingWindow == 4096 && mistral.headDim == 16)
        #expect(!mistral.queryKeyValueBias && mistral.rope?.theta == 10_000)
        let qwen = try decode(#"{"model_type": "qwen2", "use_sliding_window": false, "sliding_window": 32768}"#)
        #expect(qwen.queryKeyValueBias && !qwen.attentionOutputBias && qwen.slidingWindow == nil)
    }

    @Test("unsupported or malformed configs fail with one line")
    func failures() throws {
        #expect(throws: RuntimeError.unsupportedArchitecture("model_type t5")) { try decode(#"{"model_type": "t5"}"#) }
        #expect(throws: RuntimeError.invalidConfig("field hidden_size has the wrong type")) {
            try decode(#"{"model_type": "llama", "hidden_size": "big"}"#)
        }
        #expect(throws: RuntimeError.invalidConfig("rope type proportional is not supported")) {
            try decode(#"{"model_type": "llama", "rope_scaling": {"rope_type": "proportional"}}"#)
        }
        #expect(throws: RuntimeError.invalidConfig("activation gelu_10 is not supported")) {
            try decode(#"{"model_type": "bert", "hidden_act": "gelu_10"}"#)
        }
    }

    /// Expected values: transformers 5.24.0 `ROPE_INIT_FUNCTIONS[type](config, None[, seq_len])`
    /// on LlamaConfig with the same fields (printed by the peft venv; fp32 values). Tolerance 1e-6
    /// relative: transformers evaluates in fp32, the runtime in double rounded once, so the two
    /// differ by at most a couple of fp32 ulps (1.2e-7 each).
    @Test("rotary inverse frequencies match transformers for every scaling type")
    func ropeTypes() throws {
        let llama3 = try decode("""
            {"model_type": "llama", "hidden_size": 256, "num_attention_heads": 4, "head_dim": 64,
             "max_position_embeddings": 131072, "rope_theta": 500000.0,
             "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}
            """)
        try expectFrequencies(llama3, sequenceLength: 7, scaling: 1, [
            1.0, 0.663601279258728, 0.44036662578582764, 0.2922278344631195, 0.193922758102417,
            0.12868738174438477, 0.08539710193872452, 0.05666961893439293, 0.03760603070259094,
            0.02495540864765644, 0.016560440883040428, 0.010989529080688953, 0.00729266507551074,
            0.00483942124992609, 0.0032114461064338684, 0.0013718936825171113, 0.0005248460220173001,
            0.0001785077911335975, 7.784655463183299e-05, 5.165906986803748e-05, 3.428102354519069e-05,
            2.2748929040972143e-05, 1.5096217794052791e-05, 1.0017868589784484e-05, 6.647869668086059e-06,
            4.411534519022098e-06, 2.927499735960737e-06, 1.9426925064180978e-06, 1.289173155782919e-06,
            8.554969213037111e-07, 5.677088097399974e-07, 3.76732259610435e-07,
        ])
        let linear = try decode("""
            {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "max_position_embeddings": 64,
             "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}}
            """)
        try expectFrequencies(linear, sequenceLength: 7, scaling: 1, [
            0.5, 0.15811388194561005, 0.05000000074505806, 0.015811389312148094, 0.004999999888241291,
            0.0015811389312148094, 0.0005000000237487257, 0.00015811389312148094,
        ])
        let yarn = try decode("""
            {"model_type": "llama", "hidden_size": 128, "num_attention_heads": 4, "max_position_embeddings": 8192,
             "rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0,
                                 "original_max_position_embeddings": 2048}}
            """)
        try expectFrequencies(yarn, sequenceLength: 7, scaling: 1.138629436111989, [
            1.0, 0.5623413324356079, 0.3162277638912201, 0.17782793939113617, 0.10000000149011612,
            0.05020904168486595, 0.02484646998345852, 0.012066896073520184, 0.0057142856530845165,
            0.0026108704041689634, 0.0011293849674984813, 0.00044456985779106617, 0.0002500000118743628,
            0.00014058532542549074, 7.905694656074047e-05, 4.4456985051510856e-05,
        ])
        let dynamic = try decode("""
            {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "max_position_embeddings": 64,
             "rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}}
            """)
        try expectFrequencies(dynamic, sequenceLength: 100, scaling: 1, [
            1.0, 0.28394514322280884, 0.08062484115362167, 0.0228930301964283, 0.0065003652125597,
            0.0018457469996064901, 0.0005240908940322697, 0.00014881306560710073,
        ])
    }

    private func expectFrequencies(_ config: ModelConfig, sequenceLength: Int, scaling: Double, _ expected: [Double]) throws {
        let rope = try #require(config.rope)
        let (inverse, attentionScaling) = rope.inverseFrequencies(
            headDim: config.headDim, maxPositionEmbeddings: config.maxPositionEmbeddings, sequenceLength: sequenceLength)
        #expect(inverse.count == expected.count)
        for (actual, wanted) in zip(inverse, expected) {
            #expect(abs(Double(actual) - wanted) <= 1e-6 * wanted, "\(rope.type): \(actual) vs \(wanted)")
        }
        #expect(abs(Double(attentionScaling) - scaling) <= 1e-6)
    }
}
