import Foundation
import Testing
@testable import PeftPack

/// Strict loading, adapter validation and input checks: every failure names what is wrong.
@Suite("Runtime loading and validation")
struct RuntimeLoadingTests {
    private func llama(_ edit: (inout EditedWeights) throws -> Void = { _ in }) throws -> TransformerModel {
        var weights = EditedWeights(base: try RuntimeFixtures.weights("models/llama-tiny"))
        try edit(&weights)
        return try TransformerModel.load(config: try RuntimeFixtures.config("llama-tiny"), weights: weights)
    }

    @Test("a missing tensor is named")
    func missingTensor() throws {
        try #require(RuntimeFixtures.available, "fixtures/data is missing")
        #expect(throws: RuntimeError.missingWeight(name: "layers.1.mlp.up_proj.weight (or model.layers.1.mlp.up_proj.weight)",
                                                   expectedShape: [128, 64])) {
            try llama { $0.removed = ["model.layers.1.mlp.up_proj.weight"] }
        }
    }

    @Test("a misshapen tensor is named with both shapes")
    func misshapenTensor() throws {
        try #require(RuntimeFixtures.available, "fixtures/data is missing")
        let wrong = HostTensor(floats: [Float](repeating: 0, count: 64 * 32), shape: [32, 64], dtype: .f32)
        #expect(throws: RuntimeError.weightShape(name: "model.layers.0.self_attn.q_proj.weight", shape: [32, 64],
                                                 expected: [64, 64])) {
            try llama { $0.added = ["model.layers.0.self_attn.q_proj.weight": wrong] }
        }
    }

    @Test("integer weights are refused")
    func integerWeight() throws {
        try #require(RuntimeFixtures.available, "fixtures/data is missing")
        let ints = HostTensor(dtype: .i32, shape: [64], bytes: [UInt8](repeating: 0, count: 256))
        #expect(throws: RuntimeError.weightDType(name: "model.norm.weight", dtype: .i32)) {
            try llama { $0.added = ["model.norm.weight": ints] }
        }
    }

    @Test("tensors the model does not use are reported, not loaded")
    func unusedTensors() throws {
        try #require(RuntimeFixtures.available, "fixtures/data is missing")
        let extra = HostTensor(floats: [1, 2], shape: [2], dtype: .f32)
        let model = try llama { $0.added = ["classifier.weight": extra, "model.layers.0.self_attn.rotary_emb.inv_freq": extra] }
        #expect(model.unusedWeights == ["classifier.weight"])
    }

    /// LlamaModel checkpoints have no "model." prefix; the same weights must load and run alike.
    @Test("checkpoint keys without the base prefix load the same model")
    func unprefixedKeys() throws {
        try #require(RuntimeFixtures.available, "fixtures/data is missing")
        let prefixed = try RuntimeFixtures.weights("models/llama-tiny")
        var renamed = EditedWeights(base: prefixed)
        for name in prefixed.names where name.hasPrefix("model.") {
            renamed.removed.insert(name)
            renamed.added[String(name.dropFirst("model.".count))] = try prefixed.tensor(name)
        }
        let model = try TransformerModel.load(config: try RuntimeFixtures.config("llama-tiny"), weights: renamed)
        let reference = try RuntimeFixtures.reference(case: "llama_lora")
        let error = RuntimeFixtures.relativeError(try model.forward(inputIds: reference.inputIds), reference.outputBase)
        #expect(error <= RuntimeReferenceTests.tolerance)
    }

    @Test("an adapter target the model lacks is named")
    func unknownTarget() throws {
        try #require(RuntimeFixtures.available, "fixtures/data is missing")
        var imported = try ImportedCase.load(case: "llama_lora")
        imported.adapters[0].modules[0].target = "model.layers.7.self_attn.q_proj"
        let model = try llama()
        #expect(throws: RuntimeError.unknownTarget(adapter: "llama_lora", target: "model.layers.7.self_attn.q_proj")) {
            try AdapterSet(adapters: imported.adapters, model: model, tensor: imported.tensor)
        }
    }

    @Test("adapter targets resolve with and without the base prefix")
    func targetPrefixes() throws {
        try #require(RuntimeFixtures.available, "fixtures/data is missing")
        let model = try llama()
        #expect(model.module(named: "model.layers.0.self_attn.q_proj") == model.module(named: "layers.0.self_attn.q_proj"))
        #expect(model.module(named: "model.layers.0.self_attn.q_proj") != nil)
        #expect(model.module(named: "lm_head") != nil)
        #expect(model.parameter(named: "model.embed_tokens.weight") == model.parameter(named: "embed_tokens.weight"))
    }

    @Test("a LoRA factor of the wrong shape is named with the shape the model needs")
    func misshapenFactor() throws {
        try #require(RuntimeFixtures.available, "fixtures/data is missing")
        var imported = try ImportedCase.load(case: "llama_lora")
        let bName = try #require(imported.tensorName(target: "model.layers.0.self_attn.k_proj", role: TensorRole.loraB))
        imported.tensors[bName] = HostTensor(floats: [Float](repeating: 0, count: 64 * 8), shape: [64, 8], dtype: .f32)
        let model = try llama()
        #expect(throws: RuntimeError.adapterTensorShape(adapter: "llama_lora", tensor: bName, shape: [64, 8],
                                                        expected: "[32, 8]")) {
            try AdapterSet(adapters: imported.adapters, model: model, tensor: imported.tensor)
        }
    }

    @Test("a prefix made for other attention heads is refused")
    func prefixForOtherHeads() throws {
        try #require(RuntimeFixtures.available, "fixtures/data is missing")
        let imported = try ImportedCase.load(case: "llama_prefix")
        let bert = try RuntimeFixtures.model("models/bert-tiny")
        #expect(throws: RuntimeError.invalidAdapter(adapter: "llama_prefix",
                                                    reason: "prefix has 2 key/value heads but the model has 4")) {
            try AdapterSet(adapters: imported.adapters, model: bert, tensor: imported.tensor)
        }
    }

    @Test("an adapter set only runs on the model it was built for")
    func otherModel() throws {
        try #require(RuntimeFixtures.available, "fixtures/data is missing")
        let imported = try ImportedCase.load(case: "llama_lora")
        let adapters = try AdapterSet(adapters: imported.adapters, model: try llama(), tensor: imported.tensor)
        #expect(throws: RuntimeError.adapterSetForOtherModel) {
            try llama().forward(inputIds: [[1, 2]], adapters: adapters)
        }
    }

    @Test("ragged batches, unknown token ids and overlong inputs are refused")
    func badInputs() throws {
        try #require(RuntimeFixtures.available, "fixtures/data is missing")
        let model = try llama()
        #expect(throws: RuntimeError.invalidInput("row 1 has 1 tokens but row 0 has 2")) {
            try model.forward(inputIds: [[1, 2], [3]])
        }
        #expect(throws: RuntimeError.invalidInput("token id 256 in row 0 is outside the vocabulary of 256")) {
            try model.forward(inputIds: [[256]])
        }
        #expect(throws: RuntimeError.invalidInput("the batch is empty")) { try model.forward(inputIds: []) }
        let gpt2 = try RuntimeFixtures.model("models/gpt2-tiny")
        #expect(throws: RuntimeError.invalidInput("65 positions exceed max_position_embeddings 64")) {
            try gpt2.forward(inputIds: [[Int](repeating: 1, count: 65)])
        }
    }
}
