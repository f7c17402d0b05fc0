import Foundation
import Testing
@testable import PeftPack

/// PEFT 0.21's LoHa and LoKr (fixtures/data/lycoris: trained by PEFT on the tiny Llama and BERT,
/// with PEFT's own outputs and merge_and_unload): import keeps every tensor and the config, the
/// runtime reproduces PEFT's outputs, merge reproduces PEFT's merged weights.
@Suite struct LycorisKindTests {
    static let cases = ["llama_loha", "llama_lokr", "bert_loha", "bert_lokr"]

    static func folder(_ caseName: String) -> String { Fixtures.path("lycoris/cases/\(caseName)") }
    static func base(_ caseName: String) -> String { Fixtures.path(caseName.hasPrefix("bert") ? "models/bert-tiny" : "models/llama-tiny") }

    static func pack(_ caseName: String, adapter: String? = nil) throws -> String {
        let output = Fixtures.temporaryDirectory() + "/\(caseName).peftpack"
        _ = try PackImport.run(sources: [.init(path: adapter ?? folder(caseName) + "/adapter", name: nil)], output: output,
                               baseFolder: base(caseName), level: 3)
        return output
    }

    /// A copy of a PEFT adapter folder with its config and tensors edited.
    static func editedFolder(_ source: String, config edit: (inout [String: Any]) -> Void = { _ in },
                             tensors change: (inout [String: HostTensor]) -> Void = { _ in }) throws -> String {
        let folder = Fixtures.temporaryDirectory() + "/edited"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: source + "/adapter_config.json"))) as! [String: Any]
        edit(&config)
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: folder + "/adapter_config.json"))
        let file = try SafetensorsFile(path: source + "/adapter_model.safetensors")
        var tensors: [String: HostTensor] = [:]
        for name in file.names { tensors[name] = try file.tensor(name) }
        change(&tensors)
        try SafetensorsWriter.write(tensors, metadata: ["format": "pt"], to: folder + "/adapter_model.safetensors")
        return folder
    }

    static func verify(_ pack: String, _ caseName: String) throws -> Verify.Report {
        try Verify.run(pack: pack, base: base(caseName), adapterNames: [],
                       targets: [.reference(path: folder(caseName) + "/\(caseName).ref.safetensors", key: nil)],
                       inputShape: (2, 7), seed: 0, tolerance: PipelineVerifyTests.tolerance)
    }

    @Test(arguments: cases)
    func importThenExportGivesPeftsFolderBack(caseName: String) throws {
        let out = Fixtures.temporaryDirectory() + "/peft"
        _ = try PackExport.run(pack: try Self.pack(caseName), output: out, format: .peft, name: nil, force: false)
        let source = Self.folder(caseName) + "/adapter"
        #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/adapter_config.json")) == Data(contentsOf: URL(fileURLWithPath: source + "/adapter_config.json")))
        let original = try SafetensorsFile(path: source + "/adapter_model.safetensors")
        let exported = try SafetensorsFile(path: out + "/adapter_model.safetensors")
        #expect(Set(exported.names) == Set(original.names))
        for name in original.names {
            let a = try original.tensor(name), b = try exported.tensor(name)
            #expect(a.shape == b.shape && a.dtype == b.dtype && a.bytes == b.bytes, "\(caseName): \(name)")
        }
    }

    /// fp32 on both sides; ΔW formed in fp64 here, in fp32 by PEFT (1e-5 relative, as every case).
    @Test(arguments: cases)
    func runtimeReproducesPeftsOutput(caseName: String) throws {
        let report = try Self.verify(try Self.pack(caseName), caseName)
        #expect(report.passed, "\(caseName): max rel \(report.comparisons[0].maxRelError)")
    }

    /// PEFT rounds its fp32 ΔW (two products and their Hadamard or Kronecker product) and the fp32
    /// sum; ours rounds once from fp64: elements may differ by a few fp32 ulps of the tensor's
    /// largest value (measured ≤ 0.09 ulp-relative, 8.8e-8), no more.
    @Test(arguments: cases)
    func mergeMatchesPeftsMergeAndUnload(caseName: String) throws {
        let output = Fixtures.temporaryDirectory() + "/merged"
        _ = try Merge.run(base: Self.base(caseName), inputs: [MergeInput(pack: try Self.pack(caseName), adapter: nil, weight: 1)], output: output,
                          options: .init(dtype: nil, baseCheck: .content))
        let ours = try Checkpoint(path: output), peft = try Checkpoint(path: Self.folder(caseName) + "/merged")
        var compared = 0
        for name in peft.names {
            guard let mine = try? ours.tensor(name) else { continue }
            let a = mine.floats(), b = try peft.tensor(name).floats()
            let scale = b.map { abs($0) }.max() ?? 0
            let worst = zip(a, b).map { abs($0 - $1) }.max() ?? 0
            #expect(worst <= 8 * scale.ulp, "\(caseName): \(name) differs by \(worst)")
            compared += 1
        }
        #expect(compared == peft.names.count)
    }

    /// Negative controls on PEFT's own reference: an alpha_pattern PEFT applied (layers.1
    /// down_proj at alpha 16), dropped from the config, and LoKr's W1 and W2 exchanged (q_proj's
    /// Kronecker blocks are both 8×8, so only the order tells them apart), each fail.
    @Test func theReferenceSeesThePatternAndTheKroneckerOrder() throws {
        let edited = try Self.editedFolder(Self.folder("llama_loha") + "/adapter") { config in
            config["alpha_pattern"] = [String: Any]()
        }
        #expect(!(try Self.verify(try Self.pack("llama_loha", adapter: edited), "llama_loha")).passed)

        let swapped = try Self.editedFolder(Self.folder("llama_lokr") + "/adapter", tensors: { tensors in
            let key = "base_model.model.model.layers.0.self_attn.q_proj"
            (tensors[key + ".lokr_w1_a"], tensors[key + ".lokr_w2_a"]) = (tensors[key + ".lokr_w2_a"], tensors[key + ".lokr_w1_a"])
            (tensors[key + ".lokr_w1_b"], tensors[key + ".lokr_w2_b"]) = (tensors[key + ".lokr_w2_b"], tensors[key + ".lokr_w1_b"])
        })
        #expect(!(try Self.verify(try Self.pack("llama_lokr", adapter: swapped), "llama_lokr")).passed)
    }

    static var badFolders: [(label: String, make: () throws -> String, says: String)] { [
        ("a LoHa factor at another rank", { try Self.editedFolder(folder("llama_loha") + "/adapter") { config in
            config["rank_pattern"] = ["q_proj": 3]
        } }, "adapter_config.json gives rank 3"),
        ("a convolution core", { try Self.editedFolder(folder("llama_loha") + "/adapter", tensors: { tensors in
            tensors["base_model.model.model.layers.0.self_attn.q_proj.hada_t1"] = HostTensor(floats: [1, 2, 3, 4], shape: [2, 2, 1, 1], dtype: .f32)
        }) }, "hada_t1 convolution core"),
        ("a LoKr side without its second factor", { try Self.editedFolder(folder("llama_lokr") + "/adapter", tensors: { tensors in
            tensors["base_model.model.model.layers.0.self_attn.q_proj.lokr_w2_b"] = nil
        }) }, "neither w2 alone nor both w2_a and w2_b"),
        ("LoKr blocks that do not make the weight", { try Self.editedFolder(folder("llama_lokr") + "/adapter", tensors: { tensors in
            tensors["base_model.model.model.layers.0.self_attn.o_proj.lokr_w1"] = HostTensor(floats: [Float](repeating: 0.1, count: 4 * 8), shape: [4, 8], dtype: .f32)
        }) }, "o_proj"),
    ] }

    @Test(arguments: 0..<4)
    func badFoldersAreOneLineExitTwoAndWriteNothing(index: Int) throws {
        let bad = Self.badFolders[index]
        let folder = try bad.make()
        let output = Fixtures.temporaryDirectory() + "/out.peftpack"
        let result = try CLI.run(["import", folder, "--base", Fixtures.path("models/llama-tiny"), "-o", output])
        #expect(result.status == 2, "\(bad.label): \(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1, "\(bad.label): \(result.stderr)")
        #expect(result.stderr.contains(bad.says), "\(bad.label): \(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: output), "\(bad.label)")
    }

    @Test func stackAndTheOtherFormatsRefuseThemWithTheReason() throws {
        let pack = try Self.pack("llama_loha")
        #expect { try Stack.run(inputs: [.init(pack: pack, adapter: nil, weight: 1)], output: Fixtures.temporaryDirectory() + "/s.peftpack",
                                options: .init()) } throws: { "\($0)".contains("cannot be stacked") }
        #expect { try PackExport.run(pack: pack, output: Fixtures.temporaryDirectory() + "/mlx", format: .mlx, name: nil, force: false) } throws: {
            ($0 as? InputError)?.kind == .notExpressible
        }
    }
}
