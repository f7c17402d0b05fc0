import Foundation
import Testing
@testable import PeftPack

/// `convert --to lora` on PEFT's LoHa and LoKr adapters (fixtures/data/lycoris). That PEFT loads
/// the results and that each reported error is the optimal truncation's is
/// tests/python/check_convert.py; here: the exact conversion reproduces PEFT's outputs, the ranks
/// are the factorizations' bounds, and what has no LoRA form is refused.
@Suite struct ConvertTests {
    static func converted(_ caseName: String, rule: Convert.Rule = .exact) throws -> (pack: String, report: Convert.Report) {
        let output = Fixtures.temporaryDirectory() + "/\(caseName)-lora.peftpack"
        let report = try Convert.run(pack: try LycorisKindTests.pack(caseName), adapterName: nil, output: output, options: .init(rule: rule))
        return (output, report)
    }

    /// The exact LoRA computes what the source computed (1e-5 relative, as every verify case).
    @Test(arguments: LycorisKindTests.cases)
    func theExactLoRAReproducesPeftsOutput(caseName: String) throws {
        let (pack, report) = try Self.converted(caseName)
        #expect(report.modules.allSatisfy { $0.relativeError == 0 && $0.rank <= $0.factoredRank })
        let document = try PackReader(path: pack).adapterDocument()
        #expect(document.adapters.first?.kind == .lora)
        #expect(try LycorisKindTests.verify(pack, caseName).passed)
    }

    /// LoHa's rank is at most r²: llama_loha's q_proj (rank 2 by rank_pattern) comes out at rank 4
    /// at most, the others (r = 4) at 16 at most; a LoKr of two factored sides at r·r.
    @Test func ranksAreTheFactorizationsBounds() throws {
        let (_, loha) = try Self.converted("llama_loha")
        for module in loha.modules {
            #expect(module.factoredRank == (module.target.hasSuffix("q_proj") ? 4 : 16), "\(module.target)")
        }
        let (_, lokr) = try Self.converted("llama_lokr")
        for module in lokr.modules where !module.target.hasSuffix("o_proj") {
            #expect(module.factoredRank == 4, "\(module.target)")
        }
    }

    @Test func aRuleBelowTheExactRankReportsItsError() throws {
        let (_, report) = try Self.converted("llama_loha", rule: .rank(2))
        #expect(report.modules.allSatisfy { $0.rank <= 2 && $0.relativeError > 0 && abs($0.energyKept - (1 - $0.relativeError * $0.relativeError)) < 1e-12 })
        let (_, bounded) = try Self.converted("llama_loha", rule: .maxError(0.3))
        #expect(bounded.modules.allSatisfy { $0.relativeError <= 0.3 })
    }

    @Test(arguments: [("llama_dora", "DoRA"), ("llama_ia3", "IA3"), ("llama_prefix", "adds computation")])
    func whatHasNoLoRAFormIsOneLineExitTwo(caseName: String, says: String) throws {
        let output = Fixtures.temporaryDirectory() + "/out.peftpack"
        let result = try CLI.run(["convert", try PipelineVerifyTests.pack(caseName), "--to", "lora", "-o", output])
        #expect(result.status == 2, "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1 && result.stderr.contains(says), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: output))
    }

    @Test(arguments: [["--rank", "0"], ["--energy", "1.5"], ["--max-error", "1"], ["--rank", "2", "--energy", "0.9"]])
    func badRulesAreUsageErrors(arguments: [String]) throws {
        let output = Fixtures.temporaryDirectory() + "/out.peftpack"
        let result = try CLI.run(["convert", try LycorisKindTests.pack("llama_loha"), "--to", "lora", "-o", output] + arguments)
        #expect(result.status == 2, "\(arguments): \(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: output))
    }

    /// resize takes LoRAs only, and needs a rank or a criterion; kohya's criteria are checked
    /// against sd-scripts' own resize_lora.py by scripts/check-kohya-resize.py.
    @Test(arguments: [(["--rank", "4"], "not a LoRA"), (["--sv-fro", "0.9", "--energy", "0.9"], "at most one"),
                      ([], "give --rank or a criterion"), (["--sv-ratio", "1"], "above 1")])
    func resizeRefusals(arguments: [String], says: String) throws {
        let pack = try LycorisKindTests.pack("llama_loha")
        let output = Fixtures.temporaryDirectory() + "/out.peftpack"
        let result = try CLI.run(["resize", pack, "-o", output] + arguments)
        #expect(result.status == 2 && result.stderr.contains(says), "\(arguments): \(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: output))
    }

    /// The cap holds with a criterion, and a criterion picks per module.
    @Test func resizeCapsTheCriterionsRank() throws {
        let pack = try PipelineVerifyTests.pack("llama_rslora_patterns")
        let output = Fixtures.temporaryDirectory() + "/out.peftpack"
        let result = try CLI.run(["resize", pack, "--sv-fro", "0.99", "--rank", "5", "-o", output, "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        let ranks = (report["modules"] as! [[String: Any]]).map { $0["rank"] as! Int }
        #expect(ranks.allSatisfy { $0 <= 5 } && ranks.count == 14)
    }

    /// DoRA and IA3 with their base: ΔW = W' − W factored; at an error bound of 1e-6 the LoRA
    /// computes what PEFT computed for the source (1e-5, as every verify case); without a rule
    /// the full-rank change is refused rather than written at full rank silently.
    @Test(arguments: ["llama_dora", "gpt2_dora", "llama_ia3"])
    func withItsBaseADoRAOrIA3BecomesALoRA(caseName: String) throws {
        let pack = try PipelineVerifyTests.pack(caseName)
        let base = try PipelineVerifyTests.baseFolder(of: caseName)
        let output = Fixtures.temporaryDirectory() + "/lora.peftpack"
        var options = Convert.Options(rule: .maxError(1e-6))
        options.base = base
        let report = try Convert.run(pack: pack, adapterName: nil, output: output, options: options)
        #expect(report.from == (caseName.contains("dora") ? "dora" : "ia3"))
        let verified = try Verify.run(pack: output, base: base, adapterNames: [],
                                      targets: [.reference(path: Fixtures.path("cases/\(caseName)/\(caseName).ref.safetensors"), key: nil)],
                                      inputShape: (2, 7), seed: 0, tolerance: PipelineVerifyTests.tolerance)
        #expect(verified.passed, "\(caseName): \(verified.comparisons[0].maxRelError)")
        var exact = Convert.Options()
        exact.base = base
        #expect { try Convert.run(pack: pack, adapterName: nil, output: Fixtures.temporaryDirectory() + "/x.peftpack", options: exact) } throws: {
            "\($0)".contains("needs a rank, an energy share or an error bound")
        }
    }
}
