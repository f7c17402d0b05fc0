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
