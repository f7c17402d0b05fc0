import Foundation
import Testing
@testable import PeftPack

/// Flags belong to the CLI: the library states what is wrong with a kind a caller can switch on,
/// the CLI adds the flag that resolves it; closed option sets are listed by help and refused in
/// one line; option values are parsed once, where the parser reads them.
@Suite struct CLIFlagTests {
    static let models = Fixtures.path("models")

    /// No string literal of the library names a flag (`--force`, `--name`, …): only comments may.
    /// Before this suite, 24 lines of Sources/PeftPack did.
    @Test func theLibraryNamesNoFlag() throws {
        let sources = Fixtures.repositoryRoot.appendingPathComponent("Sources/PeftPack")
        let files = try #require(FileManager.default.enumerator(atPath: sources.path)).compactMap { $0 as? String }.filter { $0.hasSuffix(".swift") }
        #expect(files.count > 50)
        let flag = try Regex(#""[^"]*--[a-z]"#)
        var offenders: [String] = []
        for file in files {
            let text = try String(contentsOf: sources.appendingPathComponent(file), encoding: .utf8)
            for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let code = line.trimmingCharacters(in: .whitespaces)
                guard !code.hasPrefix("//"), line.contains(flag) else { continue }
                offenders.append("\(file):\(number + 1)")
            }
        }
        #expect(offenders.isEmpty, "\(offenders)")
    }

    /// The library's refusal is the fact and its kind; the CLI's line is that fact plus the flag.
    @Test func exportOfTwoAdaptersStatesTheFactAndTheCLIAddsTheFlag() throws {
        let folder = Fixtures.temporaryDirectory()
        let pack = folder + "/two.peftpack"
        let made = try CLI.run(["import", PipelineVerifyTests.adapterFolder(of: "llama_lora"), PipelineVerifyTests.adapterFolder(of: "llama_prefix"),
                                "-o", pack, "--name", "lora", "--name", "prefix"])
        #expect(made.status == 0, "\(made.stderr)")
        let error = try #require(throws: InputError.self) {
            try PackExport.run(pack: pack, output: folder + "/out", format: nil, name: nil, force: false, ggufType: .f32)
        }
        #expect(error.kind == .severalAdapters)
        #expect(error.description == "\(pack): holds 2 adapters (lora, prefix)")
        let result = try CLI.run(["export", pack, "-o", folder + "/out"])
        #expect(result.status == 2)
        #expect(result.stderr == "peftpack: error: \(pack): holds 2 adapters (lora, prefix); choose one with --name\n")

        let duplicate = try #require(throws: InputError.self) {
            try PackImport.run(sources: [.init(path: pack, name: nil), .init(path: pack, name: nil)], output: folder + "/again.peftpack",
                               baseFolder: nil, level: 3, userMetadata: [:], allowNonFinite: false, dropUnloaded: false, force: false) { _, _ in }
        }
        #expect(duplicate.kind == .duplicateName)
        #expect(!duplicate.description.contains("--"))
    }

    @Test func anExistingOutputIsAFactTheCLIAnswersWithForce() throws {
        let folder = Fixtures.temporaryDirectory()
        let existing = folder + "/existing.peftpack"
        try Data("earlier\n".utf8).write(to: URL(fileURLWithPath: existing))
        let error = try #require(throws: OutputError.self) { try OutputDestination.claim(existing, as: .file, force: false, inputs: []) }
        #expect(error == .exists(path: existing))
        #expect(error.description == "\(existing): already exists")
    }

    /// Help was wrong: merge computes each changed tensor in fp64 (merge.c takes a double delta).
    @Test func mergeHelpSaysFP64() throws {
        let help = try CLI.run(["help", "merge"]).stdout.replacingOccurrences(of: "\n", with: " ")
        #expect(help.contains("computed in fp64"))
        #expect(!help.contains("computed in fp32"))
    }

    /// Help lists every closed set of values, as the parser knows them.
    @Test(arguments: [
        (["merge"], "values: bf16, fp16, fp32, auto, same, nf4, fp4, int8, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k; default: auto"),
        (["merge"], "values: q8_0, bf16, fp16, fp32)"),
        (["merge"], "values: untie, keep; default: untie"),
        (["export"], "values: peft, adapterhub, gguf"),
        (["export"], "values: f32, f16, bf16, q8_0; default: f32"),
        (["extract"], "values: lora, full, skip; default: full"),
        (["extract"], "values: full, delta, skip; default: full"),
    ])
    func helpListsTheValues(command: [String], values: String) throws {
        let help = try CLI.run(["help"] + command).stdout
        let flattened = help.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(flattened.contains(values), "\(help)")
    }

    /// merge --dtype keeps accepting DType's user names (half, float16, BF16), not only the listed ones.
    @Test func mergeDTypeAcceptsTheAliases() throws {
        let pack = try PipelineVerifyTests.pack("llama_lora")
        let output = Fixtures.temporaryDirectory() + "/merged"
        let merged = try CLI.run(["merge", "--base", "\(Self.models)/llama-tiny", pack, "-o", output, "--dtype", "half", "--quiet"])
        #expect(merged.status == 0, "\(merged.stderr)")
        let inspected = try CLI.run(["inspect", output, "--json"])
        let report = try JSONSerialization.jsonObject(with: Data(inspected.stdout.utf8)) as? [String: Any]
        let model = try #require(report?["model"] as? [String: Any])
        #expect(model["dtypes"] as? [String] == ["F16"])
    }

    /// --metadata is parsed into KEY and VALUE once; a value may hold "=", and "=value" (no key),
    /// which used to be stored as the key "value", is refused.
    @Test func metadataIsParsedOnce() throws {
        let folder = Fixtures.temporaryDirectory()
        let pack = folder + "/meta.peftpack"
        let made = try CLI.run(["import", PipelineVerifyTests.adapterFolder(of: "llama_lora"), "-o", pack, "--metadata", "run=a=b", "--metadata", "empty="])
        #expect(made.status == 0, "\(made.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(try CLI.run(["inspect", pack, "--json"]).stdout.utf8)) as? [String: Any]
        #expect(report?["userMetadata"] as? [String: String] == ["run": "a=b", "empty": ""])
        let refused = try CLI.run(["import", PipelineVerifyTests.adapterFolder(of: "llama_lora"), "-o", folder + "/no-key.peftpack", "--metadata", "=value"])
        #expect(refused.status == 2 && refused.stderr.split(separator: "\n").count == 1, "\(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: folder + "/no-key.peftpack"))
    }

    /// Every usage error is one line, exit 2, as README's exit-code table says (the parser's own
    /// errors printed the usage text after it).
    @Test(arguments: [["merge"], ["merge", "--base", "b", "p.peftpack", "-o", "out", "--frobnicate"],
                      ["extract", "--base", "b", "--finetuned", "f", "-o", "o.peftpack", "--embeddings", "sometimes"],
                      ["verify", "p.peftpack", "--base", "b"]])
    func usageErrorsAreOneLine(arguments: [String]) throws {
        let result = try CLI.run(arguments)
        #expect(result.status == 2)
        #expect(result.stderr.hasPrefix("peftpack: error: ") && result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
    }

    /// A budget too large for an Int used to crash extract (Double → Int trap); it is a usage error.
    @Test func anOverflowingBudgetIsAUsageError() throws {
        let output = Fixtures.temporaryDirectory() + "/out.peftpack"
        let result = try CLI.run(["extract", "--base", "\(Self.models)/llama-tiny", "--finetuned", "\(Self.models)/llama-tiny-ft", "-o", output, "--budget", "1e30K"])
        #expect(result.status == 2)
        #expect(result.stderr == "peftpack: error: The value '1e30K' is invalid for '--budget <budget>': not a parameter count (2000000, 2M) or a size in bytes (8MB, 1GiB)\n")
    }
}
