import Foundation
import Testing
@testable import PeftPack

/// llama.cpp GGUF models of the families beyond Llama (fixtures/data/gguf_families:
/// convert_hf_to_gguf.py's f32 and q8_0 of tiny Qwen2, Qwen3, Mistral, Gemma, Gemma 2, Gemma 3 and
/// Phi-3 models)
/// as runtime bases, against the logits torch computes from each file's dequantized weights
/// mapped back by gguf-py's own name tables.
///
/// Tolerance: 1e-5 of the reference's largest logit, as GGUFBaseModelTests and
/// RuntimeReferenceTests state it: both sides compute in fp32 from the same weights and differ
/// only in summation order. Q8_0 moves these logits by 0.045–0.13 (of 2.8–4.7) from the
/// unquantized model's, and a misplaced norm or an untransformed Gemma norm (off by one
/// everywhere) by far more, so neither can hide inside it.
@Suite struct GGUFFamiliesTests {
    static let families = ["qwen2", "qwen3", "mistral", "gemma", "gemma2", "gemma3", "phi3"]
    static let types = ["f32", "q8_0"]
    static let reference = Fixtures.path("gguf_families/reference.safetensors")
    static let cases = families.flatMap { family in types.map { (family, $0) } }

    static func base(_ family: String, _ type: String) throws -> GGUFBaseModel {
        try GGUFBaseModel(path: Fixtures.path("gguf_families/\(family)-\(type).gguf"))
    }

    @Test(arguments: cases)
    func runsAsTorchRunsItsDequantizedWeights(family: String, type: String) throws {
        let base = try Self.base(family, type)
        let model = try TransformerModel.load(config: base.config, weights: base)
        #expect(model.unusedWeights.isEmpty)
        let reference = try ReferenceFile(path: Self.reference)
        let output = try model.forward(inputIds: try reference.inputRows())
        let error = RuntimeFixtures.relativeError(output, try reference.output("\(family)_\(type)"))
        print("gguf \(family) \(type): relative error \(error)")
        #expect(error <= RuntimeReferenceTests.tolerance)
        let fromTransformers = RuntimeFixtures.relativeError(output, try reference.output("\(family)_transformers"))
        if type == "f32" {
            #expect(fromTransformers <= RuntimeReferenceTests.tolerance)
        } else {
            #expect(fromTransformers > 1e-3)
        }
    }

    /// The metadata gives the config.json the source model has, read by the same reader: a
    /// tied or untied head from the tensors, head_dim from key_length, Qwen2's q/k/v biases,
    /// Gemma 3's two rope bases, linear scaling of the full layers, window, pattern and soft-cap,
    /// Phi-3's partial rotary factor from rope.dimension_count.
    /// pad_token_id is the config's alone (the file's tokenizer has its own): only a sequence
    /// classifier reads it, and a GGUF model is a causal LM.
    @Test(arguments: [("qwen2", "gguf_families/qwen2/model"), ("qwen3", "families/qwen3/model"), ("gemma", "families/gemma/model"),
                       ("gemma3", "gguf_families/gemma3/model"), ("phi3", "gguf_families/phi3/model")])
    func theMetadataGivesTheSourceModelsConfig(family: String, model: String) throws {
        var expected = try ModelConfig.load(contentsOf: RuntimeFixtures.url(model + "/config.json"))
        let config = try Self.base(family, "q8_0").config
        (expected.architecture, expected.padTokenId) = (config.architecture, config.padTokenId)
        #expect(config == expected)
    }

    /// Gemma 2's soft-caps and window come from their keys; query_pre_attn_scalar, which the
    /// converter does not store, is llama.cpp's head_dim (32 here); the sliding layers alternate.
    @Test func gemma2ReadsItsCapsWindowAndQueryScaleAsLlamaCppDoes() throws {
        let config = try Self.base("gemma2", "f32").config
        #expect(config.modelType == "gemma2" && config.headDim == 32)
        #expect(config.attentionSoftcap == 2 && config.finalLogitSoftcap == 4)
        #expect(config.slidingWindow == 4 && config.slidingWindowLayers == [0, 2])
        #expect(config.attentionScale == pow(32, -0.5))
    }

    /// The converter writes Mistral as a Llama model: it reads as one, with Llama's q/k rows
    /// put back (the weights are the Mistral checkpoint's bit for bit).
    @Test func aMistralFileIsALlamaModelWithTheCheckpointsWeights() throws {
        let base = try Self.base("mistral", "f32")
        #expect(base.config.modelType == "llama" && base.config.slidingWindow == nil)
        let original = try RuntimeFixtures.weights("families/mistral/model")
        for name in ["model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight", "lm_head.weight"] {
            let got = try #require(try base.tensor(name)), want = try #require(try original.tensor(name))
            #expect(got.floats().map(\.bitPattern) == want.floats().map(\.bitPattern), "\(name)")
        }
    }

    /// Gemma's norms are stored w + 1: they read back as stored − 1 in fp32 (within the rounding
    /// of w + 1, 6e-8 here, of the checkpoint's), a range of one reads as the whole does, and
    /// storedOrder gives the file's values back bit for bit. Other tensors are untouched.
    @Test(arguments: [("gemma", "families/gemma/model"), ("gemma2", "families/gemma2/model"), ("gemma3", "gguf_families/gemma3/model")])
    func gemmaNormsReadAsStoredMinusOne(family: String, model: String) throws {
        let base = try Self.base(family, "f32")
        let original = try RuntimeFixtures.weights(model)
        let file = try GGUF.File(path: base.path)
        for (name, gguf) in [("model.layers.1.input_layernorm.weight", "blk.1.attn_norm.weight"), ("model.norm.weight", "output_norm.weight")] {
            let got = try #require(try base.tensor(name)).floats(), want = try #require(try original.tensor(name)).floats()
            let stored = file.floats(try #require(file.tensors.first { $0.name == gguf }))
            #expect(zip(got, want).allSatisfy { abs($0 - $1) <= 6e-8 } && zip(got, stored).allSatisfy { $1 - $0 == 1 })
            #expect(base.storedOrder(name, checkpointValues: got).map(\.bitPattern) == stored.map(\.bitPattern))
            var part = [Float](repeating: .nan, count: 5)
            try part.withUnsafeMutableBufferPointer { try base.widen(name, elements: 3..<8, into: $0) }
            #expect(part.map(\.bitPattern) == got[3..<8].map(\.bitPattern))
        }
        let projection = "model.layers.0.self_attn.q_proj.weight"
        let read = try #require(try base.tensor(projection)), checkpoint = try #require(try original.tensor(projection))
        #expect(read.floats() == checkpoint.floats())
    }

    @Test func anUnknownArchitectureListsTheReadableOnes() throws {
        let bytes = GGUF.write(metadata: [("general.architecture", .string("mamba"))], tensors: [])
        let path = Fixtures.temporaryDirectory() + "/mamba.gguf"
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        #expect { _ = try GGUFBaseModel(path: path) } throws: { error in
            (error as? InputError)?.description.hasSuffix("is a GGUF model of architecture mamba; peftpack reads gemma, gemma2, gemma3, llama, phi3, qwen2, qwen3 models") == true
        }
    }

    static func metadataOnlyModel(_ metadata: [(String, GGUF.Value)]) -> String {
        let embedding = (name: "token_embd.weight", shape: [8, 64], type: GGUF.ElementType.f32, data: [UInt8](repeating: 0, count: 8 * 64 * 4))
        let path = Fixtures.temporaryDirectory() + "/model.gguf"
        FileManager.default.createFile(atPath: path, contents: Data(GGUF.write(metadata: metadata, tensors: [embedding])))
        return path
    }

    static func shape(_ architecture: String) -> [(String, GGUF.Value)] {
        [("general.architecture", .string(architecture)), ("\(architecture).embedding_length", .uint32(64)), ("\(architecture).block_count", .uint32(6)),
         ("\(architecture).attention.head_count", .uint32(4)), ("\(architecture).feed_forward_length", .uint32(128))]
    }

    /// llama.cpp's gemma3 graph slides only when the file gives a window: without one every
    /// layer attends fully (Gemma3TextConfig would otherwise default to a 4096 window).
    @Test func aGemma3FileWithoutAWindowHasNoSlidingLayers() throws {
        let config = try GGUFBaseModel(path: Self.metadataOnlyModel(Self.shape("gemma3"))).config
        #expect(config.slidingWindowLayers.isEmpty)
        let windowed = try GGUFBaseModel(path: Self.metadataOnlyModel(Self.shape("gemma3") + [("gemma3.attention.sliding_window", .uint32(8))])).config
        #expect(windowed.slidingWindow == 8 && windowed.slidingWindowLayers == [0, 1, 2, 3, 4])
    }

    /// Phi-3's LongRoPE factors sit in tensors the converter adds; they are refused, not dropped.
    @Test func longRopeFactorsAreRefused() throws {
        let embedding = (name: "token_embd.weight", shape: [8, 64], type: GGUF.ElementType.f32, data: [UInt8](repeating: 0, count: 8 * 64 * 4))
        let factors = (name: "rope_factors_long.weight", shape: [6], type: GGUF.ElementType.f32, data: [UInt8](repeating: 0, count: 6 * 4))
        let path = Fixtures.temporaryDirectory() + "/model.gguf"
        FileManager.default.createFile(atPath: path, contents: Data(GGUF.write(metadata: Self.shape("phi3"), tensors: [embedding, factors])))
        #expect { _ = try GGUFBaseModel(path: path) } throws: { error in
            (error as? InputError)?.description.contains("tensor rope_factors_long.weight: holds LongRoPE frequency factors, which peftpack does not read from GGUF yet") == true
        }
    }

    /// A partial rotary count only where the family's graph has one (Phi-3), and only one that
    /// transformers' int(head_dim · factor) gives back.
    @Test func partialRotationReadsOnlyForPhi3() throws {
        let phi3 = try GGUFBaseModel(path: Self.metadataOnlyModel(Self.shape("phi3") + [("phi3.rope.dimension_count", .uint32(12))])).config
        #expect(phi3.rope?.partialRotaryFactor == 0.75)
        #expect { _ = try GGUFBaseModel(path: Self.metadataOnlyModel(Self.shape("qwen2") + [("qwen2.rope.dimension_count", .uint32(12))])) } throws: { error in
            (error as? InputError)?.description.contains("rotates 12 of each head's 16 dimensions; a qwen2 model rotates them all") == true
        }
    }

    @Test func ropeScalingOtherThanLinearIsRefused() throws {
        #expect { _ = try GGUFBaseModel(path: Self.metadataOnlyModel(Self.shape("qwen2") + [("qwen2.rope.scaling.type", .string("yarn"))])) } throws: { error in
            (error as? InputError)?.description.contains("uses yarn rope scaling, which peftpack does not read from GGUF yet") == true
        }
        #expect { _ = try GGUFBaseModel(path: Self.metadataOnlyModel(Self.shape("qwen2") + [("qwen2.rope.scaling.type", .string("linear"))])) } throws: { error in
            (error as? InputError)?.description.contains("uses linear rope scaling without qwen2.rope.scaling.factor") == true
        }
    }

    /// A sliding-window pattern key (llama.cpp reads one; the pinned converter writes none for
    /// these families) is refused rather than guessed at.
    @Test func aSlidingWindowPatternIsRefused() throws {
        let path = Self.metadataOnlyModel(Self.shape("gemma2") + [("gemma2.attention.sliding_window_pattern", .uint32(3))])
        #expect { _ = try GGUFBaseModel(path: path) } throws: { error in
            (error as? InputError)?.description.contains("gives gemma2.attention.sliding_window_pattern, which peftpack does not read from GGUF yet") == true
        }
    }
}

/// The CLI on those files, as a user holding a GGUF and a PEFT adapter of the HF model would run it.
@Suite struct GGUFFamiliesCLITests {
    static func gguf(_ family: String, _ type: String) -> String { Fixtures.path("gguf_families/\(family)-\(type).gguf") }

    /// inspect names the family (Qwen 3 tied, Qwen 2 untied) and the storage.
    @Test func inspectReadsTiedAndUntiedHeads() throws {
        let qwen3 = try CLI.run(["inspect", Self.gguf("qwen3", "q8_0")])
        #expect(qwen3.status == 0, "\(qwen3.stderr)")
        #expect(qwen3.stdout.contains("Qwen3ForCausalLM (qwen3)"))
        let qwen2 = try CLI.run(["inspect", Self.gguf("qwen2", "q8_0"), "--json"])
        #expect(qwen2.status == 0, "\(qwen2.stderr)")
        #expect(qwen2.stdout.contains("Qwen2ForCausalLM"))
    }

    /// A PEFT LoRA of the HF model imports onto the GGUF (its targets bind by name and shape).
    @Test(arguments: ["qwen3", "mistral", "gemma", "gemma2", "gemma3", "phi3"])
    func anAdapterOfTheHFModelImportsOntoTheGGUF(family: String) throws {
        let pack = Fixtures.temporaryDirectory() + "/lora.peftpack"
        let result = try CLI.run(["import", Fixtures.path("families/\(family)/cases/\(family)_lora/adapter"), "-o", pack, "--base", Self.gguf(family, "q8_0")])
        #expect(result.status == 0, "\(result.stderr)")
    }

    /// On the f32 files of families whose conversion loses nothing (Qwen 3, Gemma), verify with
    /// the GGUF as base matches PEFT's output on the HF model.
    @Test(arguments: ["qwen3", "gemma"])
    func verifyOnTheF32GGUFMatchesPEFT(family: String) throws {
        let base = Self.gguf(family, "f32"), caseName = "\(family)_lora"
        let pack = Fixtures.temporaryDirectory() + "/lora.peftpack"
        #expect(try CLI.run(["import", Fixtures.path("families/\(family)/cases/\(caseName)/adapter"), "-o", pack, "--base", base]).status == 0)
        let result = try CLI.run(["verify", pack, "--base", base, "--reference", Fixtures.path("families/\(family)/cases/\(caseName)/\(caseName).ref.safetensors")])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
    }
}
