import Foundation
import Testing
@testable import PeftPack

/// Bad MLX-quantized folders: a `quantization` entry peftpack cannot read, or weights that do not
/// match it, refused when the folder opens: one line naming the file or tensor, exit 2, nothing written.
@Suite struct MLXQuantizedRefusalTests {
    /// A copy of the q4_g64 fixture model with its config.json text and tensors edited.
    static func edited(config edit: (String) -> String = { $0 }, tensors change: (inout [String: HostTensor]) -> Void = { _ in }) throws -> String {
        let source = Fixtures.path("mlx_quantized/q4_g64/model")
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

    @Test func anotherModeIsRefused() throws {
        let base = try Self.edited(config: { $0.replacingOccurrences(of: "\"mode\": \"affine\"", with: "\"mode\": \"mxfp4\"") })
        try Self.expectRefused(base, saying: "quantization.mode is mxfp4, which peftpack does not read (it reads affine)")
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
