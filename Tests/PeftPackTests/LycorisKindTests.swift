import Foundation
import Testing
@testable import PeftPack

/// PEFT 0.21's LoHa and LoKr (fixtures/data/lycoris: trained by PEFT on the tiny Llama and BERT,
/// with PEFT's own outputs and merge_and_unload): import keeps every tensor and the config, the
/// runtime reproduces PEFT's outputs, merge reproduces PEFT's merged weights.
@Suite struct LycorisKindTests {
    static let cases = ["llama_loha", "llama_lokr", "bert_loha", "bert_lokr"]

    static let fixtures = PeftKindCases(root: "lycoris/cases")

    static func folder(_ caseName: String) -> String { fixtures.folder(caseName) }
    static func base(_ caseName: String) -> String { fixtures.base(caseName) }
    static func pack(_ caseName: String, adapter: String? = nil) throws -> String { try fixtures.pack(caseName, adapter: adapter) }
    static func verify(_ pack: String, _ caseName: String) throws -> Verify.Report { try fixtures.verify(pack, caseName) }

    @Test(arguments: cases)
    func importThenExportGivesPeftsFolderBack(caseName: String) throws {
        try Self.fixtures.expectExportGivesPeftsFolderBack(caseName)
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
        let (compared, total) = try Self.fixtures.expectMergeMatchesPeft(caseName)
        #expect(compared == total)
    }

    /// Negative controls on PEFT's own reference: an alpha_pattern PEFT applied (layers.1
    /// down_proj at alpha 16), dropped from the config, and LoKr's W1 and W2 exchanged (q_proj's
    /// Kronecker blocks are both 8×8, so only the order tells them apart), each fail.
    @Test func theReferenceSeesThePatternAndTheKroneckerOrder() throws {
        let edited = try PeftKindCases.editedFolder(Self.folder("llama_loha") + "/adapter") { config in
            config["alpha_pattern"] = [String: Any]()
        }
        #expect(!(try Self.verify(try Self.pack("llama_loha", adapter: edited), "llama_loha")).passed)

        let swapped = try PeftKindCases.editedFolder(Self.folder("llama_lokr") + "/adapter", tensors: { tensors in
            let key = "base_model.model.model.layers.0.self_attn.q_proj"
            (tensors[key + ".lokr_w1_a"], tensors[key + ".lokr_w2_a"]) = (tensors[key + ".lokr_w2_a"], tensors[key + ".lokr_w1_a"])
            (tensors[key + ".lokr_w1_b"], tensors[key + ".lokr_w2_b"]) = (tensors[key + ".lokr_w2_b"], tensors[key + ".lokr_w1_b"])
        })
        #expect(!(try Self.verify(try Self.pack("llama_lokr", adapter: swapped), "llama_lokr")).passed)
    }

    static var badFolders: [(label: String, make: () throws -> String, says: String)] { [
        ("a LoHa factor at another rank", { try PeftKindCases.editedFolder(folder("llama_loha") + "/adapter") { config in
            config["rank_pattern"] = ["q_proj": 3]
        } }, "adapter_config.json gives rank 3"),
        ("a convolution core", { try PeftKindCases.editedFolder(folder("llama_loha") + "/adapter", tensors: { tensors in
            tensors["base_model.model.model.layers.0.self_attn.q_proj.hada_t1"] = HostTensor(floats: [1, 2, 3, 4], shape: [2, 2, 1, 1], dtype: .f32)
        }) }, "hada_t1 convolution core"),
        ("a LoKr side without its second factor", { try PeftKindCases.editedFolder(folder("llama_lokr") + "/adapter", tensors: { tensors in
            tensors["base_model.model.model.layers.0.self_attn.q_proj.lokr_w2_b"] = nil
        }) }, "neither w2 alone nor both w2_a and w2_b"),
        ("LoKr blocks that do not make the weight", { try PeftKindCases.editedFolder(folder("llama_lokr") + "/adapter", tensors: { tensors in
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
