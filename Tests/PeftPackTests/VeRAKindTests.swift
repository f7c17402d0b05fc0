import Foundation
import Testing
@testable import PeftPack

/// PEFT 0.21's VeRA (fixtures/data/vera: shared projections sliced per module, trained vectors,
/// on the tiny Llama and GPT-2's Conv1D, with PEFT's outputs and merge_and_unload).
@Suite struct VeRAKindTests {
    static let cases = ["llama_vera", "gpt2_vera"]

    static let fixtures = PeftKindCases(root: "vera/cases")

    static func folder(_ caseName: String) -> String { fixtures.folder(caseName) }
    static func base(_ caseName: String) -> String { fixtures.base(caseName) }
    static func pack(_ caseName: String, adapter: String? = nil) throws -> String { try fixtures.pack(caseName, adapter: adapter) }
    static func verify(_ pack: String, _ caseName: String) throws -> Verify.Report { try fixtures.verify(pack, caseName) }

    /// Every tensor comes back byte for byte, the shared projections once.
    @Test(arguments: cases)
    func importThenExportGivesPeftsFolderBack(caseName: String) throws {
        try Self.fixtures.expectExportGivesPeftsFolderBack(caseName)
    }

    /// fp32 on both sides (1e-5 relative, as every verify case).
    @Test(arguments: cases)
    func runtimeReproducesPeftsReloadedOutput(caseName: String) throws {
        let report = try Self.verify(try Self.pack(caseName), caseName)
        #expect(report.passed, "\(caseName): max rel \(report.comparisons[0].maxRelError)")
    }

    /// Against PEFT's merged weights: its fp32 ΔW and sum against one rounding from fp64 (8 ulps
    /// of each tensor's largest value, as for the other kinds).
    @Test(arguments: cases)
    func mergeMatchesPeftsMergeAndUnload(caseName: String) throws {
        try Self.fixtures.expectMergeMatchesPeft(caseName)
    }

    /// Negative control on PEFT's reference: only down_proj (128 inputs) reads vera_A's columns
    /// 64–127, so changing them moves that module alone, and the reference sees it.
    @Test func theReferenceSeesEachModulesSlice() throws {
        let edited = try PeftKindCases.editedFolder(Self.folder("llama_vera") + "/adapter", tensors: { tensors in
            var a = tensors["base_model.vera_A"]!.floats()
            for row in 0..<8 { for column in 64..<128 { a[row * 128 + column] *= 1.5 } }
            tensors["base_model.vera_A"] = HostTensor(floats: a, shape: [8, 128], dtype: .f32)
        })
        #expect(!(try Self.verify(try Self.pack("llama_vera", adapter: edited), "llama_vera")).passed)
    }

    @Test func convertGivesTheSameOutputsAsAPlainLoRA() throws {
        for caseName in Self.cases {
            let output = Fixtures.temporaryDirectory() + "/\(caseName)-lora.peftpack"
            _ = try Convert.run(pack: try Self.pack(caseName), adapterName: nil, output: output, options: .init())
            #expect(try Self.verify(output, caseName).passed, "\(caseName)")
        }
    }

    /// With save_projection false PEFT regenerates the projections from projection_prng_key with
    /// torch's generator; peftpack refuses rather than guess them.
    @Test func unsavedProjectionsAreOneLineExitTwo() throws {
        let edited = try PeftKindCases.editedFolder(Self.folder("llama_vera") + "/adapter", config: { $0["save_projection"] = false }, tensors: { tensors in
            tensors["base_model.vera_A"] = nil
            tensors["base_model.vera_B"] = nil
        })
        let output = Fixtures.temporaryDirectory() + "/out.peftpack"
        let result = try CLI.run(["import", edited, "--base", Self.base("llama_vera"), "-o", output])
        #expect(result.status == 2 && result.stderr.contains("projection_prng_key"), "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1)
        #expect(!FileManager.default.fileExists(atPath: output))
    }
}
