import Foundation
import Testing

/// `peftpack extract` and `peftpack stack` as a user runs them: reports, --json, and bad input
/// answered with one line on stderr, exit 2 and no output file.
@Suite struct ExtractStackCLITests {
    static let models = Fixtures.path("models")

    @Test func extractReportsAndWritesJSON() throws {
        let output = Fixtures.temporaryDirectory() + "/ft.peftpack"
        let result = try CLI.run(["extract", "--base", "\(Self.models)/llama-tiny", "--finetuned", "\(Self.models)/llama-tiny-ft",
                                  "-o", output, "--rank", "4", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        #expect((report["modules"] as! [[String: Any]]).count == 14)
        #expect((report["modules"] as! [[String: Any]]).allSatisfy { $0["rank"] as? Int == 4 })
        #expect(FileManager.default.fileExists(atPath: output))
    }

    @Test(arguments: [
        (["--finetuned", "gpt2-tiny"], "not the same architecture"),
        (["--finetuned", "llama-tiny"], "nothing to extract"),
        (["--finetuned", "llama-tiny-ft", "--rank", "0"], "--rank must be at least 1"),
        (["--finetuned", "llama-tiny-ft", "--energy", "1.5"], "--energy must be in (0, 1]"),
        (["--finetuned", "llama-tiny-ft", "--rank", "4", "--energy", "0.5"], "at most one of"),
        (["--finetuned", "llama-tiny-ft", "--budget", "lots"], "is invalid for '--budget <budget>': not a parameter count"),
    ])
    func extractRefusesBadInput(arguments: [String], message: String) throws {
        let output = Fixtures.temporaryDirectory() + "/out.peftpack"
        var full = ["extract", "--base", "\(Self.models)/llama-tiny", "-o", output] + arguments
        if let index = full.firstIndex(of: "--finetuned") { full[index + 1] = "\(Self.models)/\(full[index + 1])" }
        let result = try CLI.run(full)
        #expect(result.status == 2)
        #expect(result.stderr.contains(message), "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1 || result.stderr.contains("Usage"))
        #expect(!FileManager.default.fileExists(atPath: output))
    }

    @Test func stackRefusesBadInput() throws {
        let lora = try PipelineVerifyTests.pack("llama_lora"), gpt2 = try PipelineVerifyTests.pack("gpt2_lora_fan_in_fan_out")
        let dora = try PipelineVerifyTests.pack("llama_dora")
        let output = Fixtures.temporaryDirectory() + "/out.peftpack"
        for (arguments, message) in [([lora, gpt2], "different base"), ([lora, dora], "DoRA"),
                                     ([lora, lora, "--weight", "1"], "--weight is given 1 times for 2 packs")] {
            let result = try CLI.run(["stack"] + arguments + ["-o", output])
            #expect(result.status == 2, "\(arguments)")
            #expect(result.stderr.contains(message), "\(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: output))
        }
        let ok = try CLI.run(["stack", lora, lora, "--weight", "0.5", "--weight", "0.5", "--rank", "4", "-o", output])
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(ok.stdout.contains("lora adapter stacked from 2 inputs"))
    }

    /// Negative weights are values, not options: `--weight -1` un-merges.
    @Test func negativeWeightsParse() throws {
        let lora = try PipelineVerifyTests.pack("llama_lora")
        let folder = Fixtures.temporaryDirectory()
        let merged = try CLI.run(["merge", "--base", "\(Self.models)/llama-tiny", lora, "-o", folder + "/merged"])
        #expect(merged.status == 0, "\(merged.stderr)")
        let restored = try CLI.run(["merge", "--base", folder + "/merged", lora, "--weight", "-1", "-o", folder + "/restored", "--trust-base"])
        #expect(restored.status == 0, "\(restored.stderr)")
        let stacked = try CLI.run(["stack", lora, lora, "--weight", "1", "--weight", "-1", "-o", folder + "/zero.peftpack"])
        #expect(stacked.status == 0, "\(stacked.stderr)")
    }

    @Test func badGGUFExitsWithTwo() throws {
        let folder = Fixtures.temporaryDirectory()
        try Data("GGUF\u{3}\u{0}\u{0}\u{0}".utf8).write(to: URL(fileURLWithPath: folder + "/short.gguf"))
        let result = try CLI.run(["import", folder + "/short.gguf", "-o", folder + "/out.peftpack"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("short.gguf") && result.stderr.contains("truncated"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: folder + "/out.peftpack"))
        let inspect = try CLI.run(["inspect", folder + "/short.gguf"])
        #expect(inspect.status == 2)
    }
}
