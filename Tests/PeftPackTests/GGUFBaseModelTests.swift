import Foundation
import Testing
@testable import PeftPack

/// llama.cpp GGUF models of models/llama-tiny (fixtures/data/gguf_base: convert_hf_to_gguf.py's
/// f32, f16, bf16 and q8_0, gguf-py's requantization to Q4_0 … Q5_1) as runtime bases, against
/// the logits torch computes with each file's dequantized weights.
///
/// Tolerance: 1e-5 of the reference's largest logit, as RuntimeReferenceTests states it: both
/// sides compute in fp32 and differ only in summation order. Quantization moves the logits by
/// 2e-3 (f16) to 1.1 (Q4_0) from the unquantized model's, so a wrong block layout, scale or row
/// order cannot hide inside the tolerance.
@Suite struct GGUFBaseModelTests {
    static let types = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1"]
    static let reference = Fixtures.path("gguf_base/reference.safetensors")

    static func base(_ type: String) throws -> GGUFBaseModel {
        try GGUFBaseModel(path: Fixtures.path("gguf_base/llama-tiny-\(type).gguf"))
    }

    @Test(arguments: types)
    func runsAsTorchRunsItsDequantizedWeights(type: String) throws {
        let base = try Self.base(type)
        let model = try TransformerModel.load(config: base.config, weights: base)
        #expect(model.unusedWeights.isEmpty)
        let reference = try ReferenceFile(path: Self.reference)
        let output = try model.forward(inputIds: try reference.inputRows())
        let error = RuntimeFixtures.relativeError(output, try reference.output("logits_\(type)"))
        print("gguf base \(type): relative error \(error)")
        #expect(error <= RuntimeReferenceTests.tolerance)
        if type != "f32" {
            #expect(RuntimeFixtures.relativeError(output, try reference.output("logits_transformers")) > 1e-4)
        }
    }

    /// Q4_K, Q5_K and Q6_K mixed as in a Q4_K_M file, on a Llama whose norms are not all ones (so
    /// attn_norm and ffn_norm mapped to each other's place would show).
    @Test func aKQuantModelRunsAsTorchRunsItsDequantizedWeights() throws {
        let base = try GGUFBaseModel(path: Fixtures.path("gguf_base/llama-k-quants.gguf"))
        #expect(base.config.hiddenSize == 256 && base.config.headDim == 64 && base.config.numKeyValueHeads == 2)
        let model = try TransformerModel.load(config: base.config, weights: base)
        #expect(model.unusedWeights.isEmpty)
        let reference = try ReferenceFile(path: Self.reference)
        let output = try model.forward(inputIds: try reference.inputRows())
        let error = RuntimeFixtures.relativeError(output, try reference.output("logits_k_quants"))
        print("gguf base k-quants: relative error \(error)")
        #expect(error <= RuntimeReferenceTests.tolerance)
        #expect(RuntimeFixtures.relativeError(output, try reference.output("logits_k_quants_transformers")) > 1e-2)
    }

    @Test func anF32FileRunsAsTheTransformersModel() throws {
        let base = try Self.base("f32")
        let model = try TransformerModel.load(config: base.config, weights: base)
        let reference = try ReferenceFile(path: Self.reference)
        let error = RuntimeFixtures.relativeError(try model.forward(inputIds: try reference.inputRows()), try reference.output("logits_transformers"))
        #expect(error <= RuntimeReferenceTests.tolerance)
    }

    @Test func theMetadataGivesTheConfigOfConfigJSON() throws {
        var expected = try RuntimeFixtures.config("llama-tiny")
        let config = try Self.base("q4_0").config
        expected.architecture = config.architecture
        #expect(config == expected)
    }

    /// convert_hf_to_gguf.py interleaves each head's rotary halves in q/k rows; undone, the
    /// weights are transformers' bit for bit.
    @Test func qAndKRowsComeBackInTransformersOrder() throws {
        let base = try Self.base("f32")
        let original = try RuntimeFixtures.weights("models/llama-tiny")
        for name in ["model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight", "model.layers.0.mlp.down_proj.weight", "lm_head.weight"] {
            let got = try #require(try base.tensor(name)), want = try #require(try original.tensor(name))
            #expect(got.shape == want.shape && got.floats().map(\.bitPattern) == want.floats().map(\.bitPattern), "\(name)")
        }
    }

    /// storedOrder is the inverse of reading: checkpoint-order q/k rows go back to the file's
    /// permuted order bit for bit, and an untransformed tensor comes back as it is.
    @Test func storedOrderGivesBackTheFilesValues() throws {
        let base = try Self.base("f32")
        let file = try GGUF.File(path: base.path)
        for (name, gguf) in [("model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight"), ("model.layers.1.self_attn.k_proj.weight", "blk.1.attn_k.weight"),
                             ("model.layers.0.mlp.down_proj.weight", "blk.0.ffn_down.weight")] {
            let checkpoint = try #require(try base.tensor(name)).floats()
            let stored = file.floats(try #require(file.tensors.first { $0.name == gguf }))
            #expect(base.storedOrder(name, checkpointValues: checkpoint).map(\.bitPattern) == stored.map(\.bitPattern), "\(name)")
        }
        let query = try #require(try base.tensor("model.layers.0.self_attn.q_proj.weight")).floats()
        #expect(query != file.floats(file.tensors.first { $0.name == "blk.0.attn_q.weight" }!))
    }

    @Test func aRangeInsideBlocksReadsAsTheWholeTensorDoes() throws {
        let base = try Self.base("q5_1")
        let name = "model.layers.1.mlp.down_proj.weight"
        let whole = try #require(try base.tensor(name)).floats()
        var part = [Float](repeating: .nan, count: 91)
        try part.withUnsafeMutableBufferPointer { try base.widen(name, elements: 37..<128, into: $0) }
        #expect(part.map(\.bitPattern) == whole[37..<128].map(\.bitPattern))
        #expect(try base.tensorInfo(name)?.dtype == .f32 && base.tensorInfo("model.norm.weight")?.shape == [64])
        #expect(try Self.base("bf16").tensorInfo(name)?.dtype == .bf16)
    }

    @Test func aLoRAAdapterFileIsNotABase() throws {
        let pack = try PipelineVerifyTests.pack("llama_lora")
        let output = Fixtures.temporaryDirectory() + "/adapter.gguf"
        _ = try PackExport.run(pack: pack, output: output, format: .gguf, name: nil, force: false)
        #expect { _ = try GGUFBaseModel(path: output) } throws: { error in
            (error as? InputError)?.description.contains("is a GGUF adapter (general.type), not a model") == true
        }
    }

    @Test func anotherArchitectureIsNamed() throws {
        let bytes = GGUF.write(metadata: [("general.architecture", .string("mamba"))], tensors: [])
        let path = Fixtures.temporaryDirectory() + "/mamba.gguf"
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        #expect { _ = try GGUFBaseModel(path: path) } throws: { error in
            (error as? InputError)?.description.contains("architecture mamba; peftpack reads gemma, gemma2, gemma3, llama, phi3, qwen2, qwen3 models") == true
        }
    }

    static let firstShard = Fixtures.path("gguf_base/split/llama-tiny-q8_0-00001-of-00003.gguf")

    @Test func aSplitModelRunsAsTheUnsplitFile() throws {
        let split = try GGUFBaseModel(path: Self.firstShard), whole = try Self.base("q8_0")
        #expect(split.config == whole.config && Set(split.names) == Set(whole.names))
        let inputs = try ReferenceFile(path: Self.reference).inputRows()
        let outputs = try [split, whole].map { try TransformerModel.load(config: $0.config, weights: $0).forward(inputIds: inputs) }
        #expect(outputs[0].values.map(\.bitPattern) == outputs[1].values.map(\.bitPattern))
    }

    @Test func aSplitModelIsNamedByItsFirstShardAndMustBeComplete() throws {
        let folder = Fixtures.temporaryDirectory()
        for shard in 1...3 {
            let name = "llama-tiny-q8_0-0000\(shard)-of-00003.gguf"
            try FileManager.default.copyItem(atPath: Fixtures.path("gguf_base/split/\(name)"), toPath: "\(folder)/\(name)")
        }
        #expect { _ = try GGUFBaseModel(path: "\(folder)/llama-tiny-q8_0-00002-of-00003.gguf") } throws: { error in
            (error as? InputError)?.description.contains("is shard 2 of 3 of a split model; give the first") == true
        }
        try FileManager.default.removeItem(atPath: "\(folder)/llama-tiny-q8_0-00003-of-00003.gguf")
        #expect { _ = try GGUFBaseModel(path: "\(folder)/llama-tiny-q8_0-00001-of-00003.gguf") } throws: { error in
            (error as? InputError)?.description.contains("shard 3, \(folder)/llama-tiny-q8_0-00003-of-00003.gguf, is missing") == true
        }
        try FileManager.default.moveItem(atPath: "\(folder)/llama-tiny-q8_0-00001-of-00003.gguf", toPath: "\(folder)/renamed.gguf")
        #expect { _ = try GGUFBaseModel(path: "\(folder)/renamed.gguf") } throws: { error in
            (error as? InputError)?.description.contains("is not named NAME-00001-of-00003.gguf") == true
        }
    }

    static let metadataCases: [(String, [(String, GGUF.Value)], String)] = [
        ("no layer count", [], "has no llama.block_count (the layer count)"),
        ("partial rotary", [("llama.block_count", .uint32(1)), ("llama.rope.dimension_count", .uint32(8))], "rotates 8 of each head's 16 dimensions"),
        ("rope scaling", [("llama.block_count", .uint32(1)), ("llama.rope.scaling.type", .string("yarn"))], "uses yarn rope scaling"),
        ("float layer count", [("llama.block_count", .float32(2))], "has llama.block_count = float32(2.0), not a positive integer"),
        ("vocabulary", [("llama.block_count", .uint32(1)), ("llama.vocab_size", .uint32(9))], "declares llama.vocab_size 9 but token_embd has 8 rows"),
    ]

    @Test(arguments: metadataCases)
    func metadataThatMakesNoLlamaConfigIsOneLine(label: String, metadata: [(String, GGUF.Value)], expected: String) throws {
        let common: [(String, GGUF.Value)] = [("general.architecture", .string("llama")), ("llama.embedding_length", .uint32(64)),
                                              ("llama.attention.head_count", .uint32(4)), ("llama.feed_forward_length", .uint32(128))]
        let embedding = (name: "token_embd.weight", shape: [8, 64], type: GGUF.ElementType.f32, data: [UInt8](repeating: 0, count: 8 * 64 * 4))
        let path = Fixtures.temporaryDirectory() + "/model.gguf"
        FileManager.default.createFile(atPath: path, contents: Data(GGUF.write(metadata: common + metadata, tensors: [embedding])))
        #expect { _ = try GGUFBaseModel(path: path) } throws: { error in
            let line = (error as? InputError)?.description ?? "\(error)"
            return line.contains(expected) && !line.contains("\n")
        }
    }
}
