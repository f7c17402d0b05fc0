import Foundation
import Testing
@testable import PeftPack

/// PEFT 0.21's AdaLoRA (fixtures/data/adalora: trained with its rank allocation pruning during
/// training, on the tiny Llama and on GPT-2's Conv1D, with PEFT's reloaded outputs and
/// merge_and_unload).
@Suite struct AdaLoRAKindTests {
    static let cases = ["llama_adalora", "gpt2_adalora"]

    static let fixtures = PeftKindCases(root: "adalora/cases")

    static func folder(_ caseName: String) -> String { fixtures.folder(caseName) }
    static func base(_ caseName: String) -> String { fixtures.base(caseName) }
    static func pack(_ caseName: String, adapter: String? = nil) throws -> String { try fixtures.pack(caseName, adapter: adapter) }
    static func verify(_ pack: String, _ caseName: String) throws -> Verify.Report { try fixtures.verify(pack, caseName) }

    /// Every non-empty tensor comes back byte for byte (a module pruned to rank 0 saved empty
    /// tensors, which the pack does not keep; PEFT loads the folder without them, strict=False).
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

    /// PEFT's reload keeps each layer's ranknum at init_r, not the pruned rank: an init_r set to
    /// something else in the config changes the scale, and PEFT's own reference fails it.
    @Test func theReferenceSeesRanknumAtInitR() throws {
        let edited = try PeftKindCases.editedFolder(Self.folder("llama_adalora") + "/adapter") { config in
            config["init_r"] = 7
            var pattern = config["rank_pattern"] as! [String: [Bool]]
            for (key, flags) in pattern { pattern[key] = flags + [false] }
            config["rank_pattern"] = pattern
        }
        #expect(!(try Self.verify(try Self.pack("llama_adalora", adapter: edited), "llama_adalora")).passed)
    }

    @Test func convertGivesTheSameOutputsAsAPlainLoRA() throws {
        for caseName in Self.cases {
            let output = Fixtures.temporaryDirectory() + "/\(caseName)-lora.peftpack"
            _ = try Convert.run(pack: try Self.pack(caseName), adapterName: nil, output: output, options: .init())
            #expect(try Self.verify(output, caseName).passed, "\(caseName)")
        }
    }

    @Test func aRankOtherThanTheRankPatternsIsOneLineExitTwo() throws {
        let edited = try PeftKindCases.editedFolder(Self.folder("llama_adalora") + "/adapter") { config in
            var pattern = config["rank_pattern"] as! [String: [Bool]]
            let key = pattern.keys.sorted().first { pattern[$0]!.contains(true) }!
            pattern[key] = pattern[key]!.map { _ in true }
            config["rank_pattern"] = pattern
        }
        let output = Fixtures.temporaryDirectory() + "/out.peftpack"
        let result = try CLI.run(["import", edited, "--base", Self.base("llama_adalora"), "-o", output])
        #expect(result.status == 2 && result.stderr.contains("adapter_config.json keeps rank 6"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: output))
    }
}
