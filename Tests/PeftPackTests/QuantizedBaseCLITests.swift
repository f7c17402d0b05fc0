import Foundation
import Testing
@testable import PeftPack

/// A bitsandbytes-quantized base wherever a base is accepted (issue 19), against the fixtures of
/// fixturegen/bnb.py: transformers' NF4 (double quant) llama-tiny and a QLoRA adapter PEFT trained
/// on it, with PEFT + bnb's logits. tests/python/check_quantized_bases.py does the same on fresh
/// NF4/FP4/int8 artifacts and loads the merged output with transformers.
@Suite struct QuantizedBaseCLITests {
    static let base = Fixtures.path("bnb/llama-tiny-nf4")
    static let qlora = Fixtures.path("bnb/llama-tiny-nf4-qlora")

    static func pack() throws -> String {
        let output = Fixtures.temporaryDirectory() + "/qlora.peftpack"
        let result = try CLI.run(["import", qlora + "/adapter", "-o", output, "--base", base])
        #expect(result.status == 0, "\(result.stderr)")
        return output
    }

    /// The checkpoint reads as its logical tensors: the quantized weights under their own names
    /// in fp32 (the quant state's dtype), no companion visible.
    @Test func theQuantizedCheckpointReadsAsItsLogicalTensors() throws {
        let checkpoint = try Checkpoint(path: Self.base)
        #expect(checkpoint.dequantizer != nil)
        #expect(checkpoint.isQuantized("model.layers.0.self_attn.q_proj.weight"))
        #expect(checkpoint.info("model.layers.0.self_attn.q_proj.weight")?.shape == [64, 64])
        #expect(checkpoint.info("model.layers.0.self_attn.q_proj.weight")?.dtype == .f32)
        #expect(!checkpoint.names.contains { $0.contains("absmax") || $0.contains("quant_state") || $0.contains("quant_map") })
        #expect(checkpoint.storedNames.contains { $0.contains("quant_state") })
    }

    /// QLoRA on its NF4 base: verify matches PEFT + bnb (fp32 compute dtype: fp32 tolerance).
    @Test func verifyMatchesPEFTOnTheQuantizedBase() throws {
        let result = try CLI.run(["verify", try Self.pack(), "--base", Self.base, "--reference", Self.qlora + "/llama-tiny-nf4-qlora.ref.safetensors"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
    }

    /// The merge writes a plain model: dequantized weights plus ΔW, config without
    /// quantization_config; verify --merged passes on it.
    @Test func mergeWritesAPlainModel() throws {
        let pack = try Self.pack()
        let output = Fixtures.temporaryDirectory() + "/merged"
        let merge = try CLI.run(["merge", "--base", Self.base, pack, "-o", output])
        #expect(merge.status == 0, "\(merge.stderr)")
        let config = try String(contentsOfFile: output + "/config.json", encoding: .utf8)
        #expect(!config.contains("quantization_config"))
        #expect(config.contains("\"model_type\": \"llama\""))
        let merged = try Checkpoint(path: output)
        #expect(merged.dequantizer == nil && !merged.storedNames.contains { $0.contains("absmax") })
        let verify = try CLI.run(["verify", pack, "--base", Self.base, "--merged", output])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
    }

    /// The member goes with its separating comma, whether it is last or not, the rest unchanged.
    @Test func quantizationConfigIsRemovedFromTheText() {
        let middle = "{\n  \"a\": 1,\n  \"quantization_config\": {\n    \"b\": [1, \"}\"]\n  },\n  \"c\": 1e-06\n}\n"
        #expect(DequantizedConfig.removingQuantizationConfig(middle) == "{\n  \"a\": 1,\n  \"c\": 1e-06\n}\n")
        let last = "{\n  \"a\": 1,\n  \"quantization_config\": {\"x\": {\"y\": 2}}\n}\n"
        #expect(DequantizedConfig.removingQuantizationConfig(last) == "{\n  \"a\": 1\n}\n")
        let nested = "{\"a\": {\"quantization_config\": 1}, \"b\": 2}"
        #expect(DequantizedConfig.removingQuantizationConfig(nested) == nested)
    }

    /// inspect says how the weights are stored; sizes and dtypes are the dequantized ones.
    @Test func inspectNamesTheQuantization() throws {
        let result = try CLI.run(["inspect", Self.base])
        #expect(result.status == 0)
        #expect(result.stdout.contains("quantized (bitsandbytes): 14 nf4+double quant weights"))
        let int8 = try CLI.run(["inspect", Fixtures.path("bnb/llama-tiny-int8"), "--json"])
        #expect(int8.stdout.contains("\"int8\" : 14"))
    }
}

/// A llama.cpp GGUF model as a base (issue 19), against fixtures/data/gguf_base (fixturegen:
/// llama.cpp's convert_hf_to_gguf.py of models/llama-tiny, gguf-py requantizations).
@Suite struct GGUFBaseCLITests {
    static let ggufBase = Fixtures.path("gguf_base")

    /// inspect reads a GGUF model as a model (not as a LoRA file): its family from the metadata
    /// and how its tensors are stored.
    @Test func inspectReadsAGGUFModel() throws {
        let result = try CLI.run(["inspect", Self.ggufBase + "/llama-tiny-q8_0.gguf"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("LlamaForCausalLM (llama), 2 layers, 106816 parameters"))
        #expect(result.stdout.contains("quantized (gguf): 5 F32, 16 Q8_0 weights"))
    }

    /// The f32 GGUF of llama-tiny is llama-tiny (q/k rows put back): a LoRA made for the
    /// safetensors base passes its base check by content and matches PEFT's reference.
    @Test func verifyOnTheF32GGUFMatchesPEFT() throws {
        let pack = Fixtures.temporaryDirectory() + "/lora.peftpack"
        #expect(try CLI.run(["import", Fixtures.path("cases/llama_lora/adapter"), "-o", pack, "--base", Fixtures.path("models/llama-tiny")]).status == 0)
        let result = try CLI.run(["verify", pack, "--base", Self.ggufBase + "/llama-tiny-f32.gguf",
                                  "--reference", Fixtures.path("cases/llama_lora/llama_lora.ref.safetensors")])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
    }

    /// A quantized GGUF of that base holds other values: the base check says it is quantized
    /// (not "another checkpoint"), exit 2; `--skip-base-check` runs it, and PEFT's fp32 output is
    /// then off by Q8_0's rounding, which verify reports (exit 1).
    @Test func aQuantizedGGUFOfTheBaseIsNamedQuantized() throws {
        let pack = Fixtures.temporaryDirectory() + "/lora.peftpack"
        #expect(try CLI.run(["import", Fixtures.path("cases/llama_lora/adapter"), "-o", pack, "--base", Fixtures.path("models/llama-tiny")]).status == 0)
        let arguments = ["verify", pack, "--base", Self.ggufBase + "/llama-tiny-q8_0.gguf", "--reference", Fixtures.path("cases/llama_lora/llama_lora.ref.safetensors")]
        let refused = try CLI.run(arguments)
        #expect(refused.status == 2 && refused.stderr.contains("stores it quantized (gguf)"), "\(refused.stderr)")
        #expect(try CLI.run(arguments + ["--skip-base-check"]).status == 1)
    }

    /// merge into a quantized GGUF writes one GGUF file (F16 merged tensors by default) that
    /// verify --merged passes; an existing output is refused without --force, nothing changed.
    @Test func mergeIntoAGGUFBaseWritesAGGUFThatVerifies() throws {
        let base = Self.ggufBase + "/llama-tiny-q4_0.gguf"
        let pack = Fixtures.temporaryDirectory() + "/lora.peftpack"
        let imported = try CLI.run(["import", Fixtures.path("cases/llama_lora/adapter"), "-o", pack, "--base", base])
        #expect(imported.status == 0, "\(imported.stderr)")
        let output = Fixtures.temporaryDirectory() + "/merged.gguf"
        let merge = try CLI.run(["merge", "--base", base, pack, "-o", output, "--dtype", "same", "--json"])
        #expect(merge.status == 0, "\(merge.stderr)")
        #expect(merge.stdout.contains("\"survival\""))
        let verify = try CLI.run(["verify", pack, "--base", base, "--merged", output])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
        let before = try Data(contentsOf: URL(fileURLWithPath: output))
        let again = try CLI.run(["merge", "--base", base, pack, "-o", output])
        #expect(again.status == 2 && again.stderr.contains("already exists"), "\(again.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: output)) == before)
    }
}
