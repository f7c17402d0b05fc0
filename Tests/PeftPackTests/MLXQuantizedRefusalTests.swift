import Foundation
import Testing
@testable import PeftPack

/// Bad MLX-quantized folders: a `quantization` entry peftpack cannot read, or weights that do not
/// match it, refused when the folder opens: one line naming the file or tensor, exit 2, nothing written.
@Suite struct MLXQuantizedRefusalTests {
    /// A copy of a fixture model (q4_g64 unless told) with its config.json text and tensors edited.
    static func edited(_ variant: String = "q4_g64", config edit: (String) -> String = { $0 },
                       tensors change: (inout [String: HostTensor]) -> Void = { _ in }) throws -> String {
        let source = Fixtures.path("mlx_quantized/\(variant)/model")
        let folder = Fixtures.temporaryDirectory() + "/model"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try edit(try String(contentsOfFile: source + "/config.json", encoding: .utf8)).write(toFile: folder + "/config.json", atomically: false, encoding: .utf8)
        let file = try SafetensorsFile(path: source + "/model.safetensors")
        var tensors: [String: HostTensor] = [:]
        for name in file.names { tensors[name] = try file.tensor(name) }
        change(&tensors)
        try SafetensorsWriter.write(tensors, metadata: ["format": "mlx"], to: folder + "/model.safetensors")
        return folder
    }

    /// The merge's exit status and stderr, and whether it wrote anything.
    static func merge(base: String) throws -> (status: Int32, stderr: String, wrote: Bool) {
        let pack = Fixtures.temporaryDirectory() + "/lora.peftpack"
        let imported = try CLI.run(["import", Fixtures.path("mlx_adapters/mlx_lora/adapter"), "-o", pack, "--base", Fixtures.path("mlx_quantized/q4_g64/model")])
        #expect(imported.status == 0, "\(imported.stderr)")
        let output = Fixtures.temporaryDirectory() + "/merged"
        let result = try CLI.run(["merge", "--base", base, pack, "-o", output, "--dtype", "same"])
        return (result.status, result.stderr, FileManager.default.fileExists(atPath: output))
    }

    static func expectRefused(_ base: String, saying text: String) throws {
        let result = try merge(base: base)
        #expect(result.status == 2, "\(result.stderr)")
        #expect(result.stderr.contains(text), "\(result.stderr)")
        #expect(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").count == 1, "\(result.stderr)")
        #expect(!result.wrote)
    }

    @Test func bitsMLXHasButPeftpackDoesNotReadAreNamedWithTheSupportedOnes() throws {
        let base = try Self.edited(config: { $0.replacingOccurrences(of: "\"bits\": 4", with: "\"bits\": 5") })
        try Self.expectRefused(base, saying: "config.json: quantization.bits is 5, which peftpack does not read (it reads 2, 3, 4, 6, 8)")
    }

    @Test func aGroupSizeMLXDoesNotHaveIsRefused() throws {
        let base = try Self.edited(config: { $0.replacingOccurrences(of: "\"group_size\": 64", with: "\"group_size\": 16") })
        try Self.expectRefused(base, saying: "quantization.group_size is 16, which is not one of mlx's affine group sizes 32, 64, 128")
    }

    @Test func anUnknownModeIsRefused() throws {
        let base = try Self.edited(config: { $0.replacingOccurrences(of: "\"mode\": \"affine\"", with: "\"mode\": \"mxfp6\"") })
        try Self.expectRefused(base, saying: "quantization.mode is mxfp6, which peftpack does not read (it reads affine, mxfp4, mxfp8, nvfp4)")
    }

    /// mlx's float modes each have one group size and bit width (ops.cpp fp_quantize refuses others).
    @Test func aFloatModeWithAnotherGroupSizeIsRefused() throws {
        let base = try Self.edited(config: { $0.replacingOccurrences(of: "\"mode\": \"affine\"", with: "\"mode\": \"mxfp4\"") })
        try Self.expectRefused(base, saying: "config.json: quantization is mxfp4 with group_size 64 and bits 4; mxfp4 has group_size 32 and bits 4")
    }

    @Test func affineScalesUnderAFloatModeAreRefused() throws {
        let base = try Self.edited(config: {
            $0.replacingOccurrences(of: "\"mode\": \"affine\"", with: "\"mode\": \"mxfp4\"").replacingOccurrences(of: "\"group_size\": 64", with: "\"group_size\": 32")
        }, tensors: { tensors in
            for name in tensors.keys where name.hasSuffix(".biases") { tensors[name] = nil }
        })
        try Self.expectRefused(base, saying: "tensor lm_head.scales: is BF16 but mxfp4 scales are uint8")
    }

    @Test func biasesBesideAFloatModeLayerAreRefused() throws {
        let base = try Self.edited("mxfp4", tensors: { tensors in
            tensors["model.layers.0.mlp.up_proj.biases"] = HostTensor(floats: [Float](repeating: 0, count: 128 * 2), shape: [128, 2], dtype: .bf16)
        })
        try Self.expectRefused(base, saying: "tensor model.layers.0.mlp.up_proj.biases: is stored but")
        try Self.expectRefused(base, saying: "quantizes model.layers.0.mlp.up_proj as mxfp4, which has no biases")
    }

    @Test func anNVFP4GlobalScaleIsRefused() throws {
        let base = try Self.edited("nvfp4", tensors: { tensors in
            tensors["model.layers.0.mlp.up_proj.global_scale"] = HostTensor(floats: [1], shape: [1], dtype: .f32)
        })
        try Self.expectRefused(base, saying: "tensor model.layers.0.mlp.up_proj.global_scale: is stored: nvfp4 with a global scale (mlx-lm's switch layers) is not read")
    }

    @Test func floatModeScalesOfAnotherGroupCountAreRefused() throws {
        let base = try Self.edited("mxfp4", tensors: { tensors in
            let scales = tensors["model.layers.0.self_attn.q_proj.scales"]!
            tensors["model.layers.0.self_attn.q_proj.scales"] = HostTensor(dtype: .u8, shape: [64, 4], bytes: scales.bytes + scales.bytes)
        })
        try Self.expectRefused(base, saying: "tensor model.layers.0.self_attn.q_proj.scales: has shape [64, 4] but model.layers.0.self_attn.q_proj.weight [64, 8] at mxfp4 has [64, 2] groups")
    }

    @Test func scalesOfAnotherGroupCountAreRefused() throws {
        let base = try Self.edited(tensors: { tensors in
            let scales = tensors["model.layers.0.self_attn.q_proj.scales"]!
            tensors["model.layers.0.self_attn.q_proj.scales"] = HostTensor(dtype: .bf16, shape: [64, 2], bytes: scales.bytes + scales.bytes)
        })
        try Self.expectRefused(base, saying: "tensor model.layers.0.self_attn.q_proj.scales: has shape [64, 2] but model.layers.0.self_attn.q_proj.weight [64, 8] at q4 g64 has [64, 1] groups")
    }

    /// 4-bit codes read as the 8 bits config.json claims: half the elements per row, which for
    /// the 64-wide head is not whole groups (and for wider layers too few for their scales).
    @Test func aPackedShapeNotMatchingTheConfigIsRefused() throws {
        let base = try Self.edited(config: { $0.replacingOccurrences(of: "\"bits\": 4", with: "\"bits\": 8") })
        try Self.expectRefused(base, saying: "tensor lm_head.weight: has 8 uint32 per row: 32 elements at 8 bits, not whole groups of 64 (config.json's quantization for it is q8 g64)")
    }

    @Test func scalesWithoutBiasesAreRefused() throws {
        let base = try Self.edited(tensors: { $0["model.layers.0.mlp.up_proj.biases"] = nil })
        try Self.expectRefused(base, saying: "tensor model.layers.0.mlp.up_proj.scales: has no model.layers.0.mlp.up_proj.biases beside it")
    }
}
