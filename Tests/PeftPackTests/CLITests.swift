import Foundation
import Testing
@testable import PeftPack

/// The command line as a contract: names, exit codes (0 ok, 1 mismatch, 2 input error), one-line
/// errors, nothing left behind on failure.
@Suite(.serialized) struct CLITests {
    static let fixtures = Fixtures.data.path

    /// Copies a pack with one tensor changed by `edit`.
    static func perturbed(_ pack: String, tensor name: String, _ edit: (inout [Float]) -> Void) throws -> String {
        let reader = try PackReader(path: pack)
        let output = Fixtures.temporaryDirectory() + "/perturbed.peftpack"
        let writer = try PackWriter(destination: output)
        for entry in reader.tensors {
            var tensor = try reader.readTensor(entry.name)
            if entry.name == name {
                var values = tensor.floats()
                edit(&values)
                tensor = HostTensor(floats: values, shape: tensor.shape, dtype: tensor.dtype)
            }
            try writer.append(tensor, name: entry.name)
        }
        try writer.finish(document: reader.document)
        return output
    }

    static func importCase(_ caseName: String, folder: String = "adapter") throws -> String {
        let output = Fixtures.temporaryDirectory() + "/\(caseName).peftpack"
        let result = try CLI.run(["import", "\(fixtures)/cases/\(caseName)/\(folder)", "-o", output])
        #expect(result.status == 0, "\(result.stderr)")
        return output
    }

    @Test func verifyPassesOnAnImportedFixture() throws {
        let pack = try Self.importCase("llama_lora")
        let result = try CLI.run(["verify", pack, "--base", "\(Self.fixtures)/models/llama-tiny",
                                  "--reference", "\(Self.fixtures)/cases/llama_lora/llama_lora.ref.safetensors", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("\"passed\" : true"))
    }

    @Test func signFlipOfOneLoraBRowFailsVerifyWithExitOne() throws {
        let pack = try Self.importCase("llama_lora")
        let name = "default/model.layers.0.self_attn.q_proj/B"
        let damaged = try Self.perturbed(pack, tensor: name) { values in
            for column in 0..<8 { values[column] = -values[column] }
        }
        let result = try CLI.run(["verify", damaged, "--base", "\(Self.fixtures)/models/llama-tiny",
                                  "--reference", "\(Self.fixtures)/cases/llama_lora/llama_lora.ref.safetensors"])
        #expect(result.status == 1)
        #expect(result.stdout.contains("FAIL"))
    }

    @Test func changedPrefixValueFailsVerifyWithExitOne() throws {
        let pack = try Self.importCase("llama_prefix")
        let damaged = try Self.perturbed(pack, tensor: "default/layers.1/values") { $0[5] += 0.5 }
        let result = try CLI.run(["verify", damaged, "--base", "\(Self.fixtures)/models/llama-tiny",
                                  "--reference", "\(Self.fixtures)/cases/llama_prefix/llama_prefix.ref.safetensors"])
        #expect(result.status == 1)
    }

    @Test func packForAnotherBaseFailsVerifyWithExitTwoNamingTheModule() throws {
        let pack = try Self.importCase("llama_lora")
        let result = try CLI.run(["verify", pack, "--base", "\(Self.fixtures)/models/gpt2-tiny", "--merged", "\(Self.fixtures)/models/gpt2-tiny"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("model.layers.0"))
        #expect(result.stderr.split(separator: "\n").count == 1)
    }

    @Test func importAgainstTheWrongBaseFailsAndWritesNothing() throws {
        let folder = Fixtures.temporaryDirectory()
        let result = try CLI.run(["import", "\(Self.fixtures)/cases/llama_lora/adapter", "-o", folder + "/x.peftpack",
                                  "--base", "\(Self.fixtures)/models/gpt2-tiny"])
        #expect(result.status == 2)
        #expect(result.stderr.hasPrefix("peftpack: error: "))
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder).isEmpty)
    }

    @Test func hostilePickleIsRefusedAndWritesNothing() throws {
        let folder = Fixtures.temporaryDirectory()
        try FileManager.default.createDirectory(atPath: folder + "/adapter", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: "\(Self.fixtures)/cases/bert_pfeiffer/adapter_bin/adapter_config.json", toPath: folder + "/adapter/adapter_config.json")
        try FileManager.default.copyItem(atPath: "\(Self.fixtures)/malicious/os_system.bin", toPath: folder + "/adapter/pytorch_adapter.bin")
        let result = try CLI.run(["import", folder + "/adapter", "-o", folder + "/out.peftpack"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("forbidden global os.system"))
        #expect(!FileManager.default.fileExists(atPath: folder + "/out.peftpack"))
    }

    @Test func truncatedPackGivesOneLineErrorAndExitTwo() throws {
        let pack = try Self.importCase("llama_ia3")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: pack))
        let truncated = Fixtures.temporaryDirectory() + "/truncated.peftpack"
        FileManager.default.createFile(atPath: truncated, contents: bytes.prefix(bytes.count / 2))
        let result = try CLI.run(["inspect", truncated])
        #expect(result.status == 2)
        #expect(result.stderr.split(separator: "\n").count == 1)
    }

    @Test func exportRefusesToOverwriteWithoutForce() throws {
        let pack = try Self.importCase("llama_ia3")
        let folder = Fixtures.temporaryDirectory()
        #expect(try CLI.run(["export", pack, "-o", folder + "/out"]).status == 0)
        let again = try CLI.run(["export", pack, "-o", folder + "/out"])
        #expect(again.status == 2)
        #expect(again.stderr.contains("--force"))
        #expect(try CLI.run(["export", pack, "-o", folder + "/out", "--force"]).status == 0)
    }

    @Test func importRefusesToWriteOverItsInput() throws {
        let pack = try Self.importCase("llama_ia3")
        let before = try Data(contentsOf: URL(fileURLWithPath: pack))
        let result = try CLI.run(["import", pack, "-o", pack])
        #expect(result.status == 2)
        #expect(try Data(contentsOf: URL(fileURLWithPath: pack)) == before)
    }

    /// Every way of naming an input as the output is refused with exit 2 and leaves the input's
    /// bytes as they were: another spelling of the path, a symbolic link on either side, a hard
    /// link, a file inside an input folder, a folder holding an input.
    @Test func noSpellingOfAnInputIsWrittenOver() throws {
        let folder = Fixtures.temporaryDirectory()
        let pack = folder + "/a.peftpack"
        try FileManager.default.copyItem(atPath: try Self.importCase("llama_lora"), toPath: pack)
        let base = folder + "/base"
        try FileManager.default.copyItem(atPath: "\(Self.fixtures)/models/llama-tiny", toPath: base)
        let finetuned = "\(Self.fixtures)/models/llama-tiny-ft"
        try FileManager.default.createSymbolicLink(atPath: folder + "/link.peftpack", withDestinationPath: pack)
        try FileManager.default.linkItem(atPath: pack, toPath: folder + "/hard.peftpack")
        try FileManager.default.createSymbolicLink(atPath: folder + "/base-link", withDestinationPath: base)
        try FileManager.default.createDirectory(atPath: folder + "/sub", withIntermediateDirectories: false)
        let packBytes = try Data(contentsOf: URL(fileURLWithPath: pack))
        let weights = base + "/model.safetensors"
        let weightBytes = try Data(contentsOf: URL(fileURLWithPath: weights))
        let attempts: [[String]] = [
            ["import", folder + "/link.peftpack", "-o", pack],
            ["import", pack, "-o", folder + "/sub/../a.peftpack"],
            ["stack", pack, "-o", folder + "/hard.peftpack"],
            ["stack", folder + "/hard.peftpack", "-o", pack],
            ["export", pack, "-o", folder + "/link.peftpack", "--format", "gguf", "--force"],
            ["import", "\(Self.fixtures)/cases/llama_lora/adapter", "-o", weights, "--base", base],
            ["extract", "--base", base, "--finetuned", finetuned, "-o", weights],
            ["merge", "--base", base, pack, "-o", folder + "/base-link", "--force"],
            ["merge", "--base", folder + "/base-link", pack, "-o", base + "/merged"],
            ["export", pack, "-o", folder, "--force"],
        ]
        for arguments in attempts {
            let result = try CLI.run(arguments)
            #expect(result.status == 2, "\(arguments)")
            #expect(result.stderr.contains("refusing to write"), "\(arguments): \(result.stderr)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: pack)) == packBytes)
        #expect(try Data(contentsOf: URL(fileURLWithPath: weights)) == weightBytes)
        #expect(!FileManager.default.fileExists(atPath: base + "/merged"))
    }

    @Test func inspectJsonReportsAdaptersAndRatio() throws {
        let pack = try Self.importCase("llama_rslora_patterns")
        let result = try CLI.run(["inspect", pack, "--json", "--tensors", "--verify"])
        #expect(result.status == 0)
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        let adapters = json["adapters"] as! [[String: Any]]
        #expect(adapters.first?["ranks"] as? [Int] == [4, 8, 12])
        #expect((json["tensors"] as! [Any]).count == 28)
        #expect(json["verified"] as? Bool == true)
    }

    @Test func usageErrorsExitWithTwo() throws {
        #expect(try CLI.run(["import", "a", "b", "-o", "x.peftpack", "--name", "only-one"]).status == 2)
        #expect(try CLI.run(["verify", "x.peftpack", "--base", "b"]).status == 2)
        #expect(try CLI.run(["frobnicate"]).status == 2)
    }
}

/// merge's refusals: one line, exit 2, nothing written.
@Suite(.serialized) struct MergeCLITests {
    static let fixtures = Fixtures.data.path

    @Test func wrongBaseIsRefusedAndNothingWritten() throws {
        let pack = try CLITests.importCase("llama_lora")
        let folder = Fixtures.temporaryDirectory()
        let result = try CLI.run(["merge", "--base", "\(Self.fixtures)/models/gpt2-tiny", pack, "-o", folder + "/out"])
        #expect(result.status == 2)
        #expect(result.stderr.split(separator: "\n").count == 1)
        #expect(!FileManager.default.fileExists(atPath: folder + "/out"))
    }

    @Test func prefixAdapterIsRefusedUnlessSkipped() throws {
        let pack = try CLITests.importCase("llama_prefix")
        let folder = Fixtures.temporaryDirectory()
        let refused = try CLI.run(["merge", "--base", "\(Self.fixtures)/models/llama-tiny", pack, "-o", folder + "/out"])
        #expect(refused.status == 2)
        #expect(refused.stderr.contains("cannot be folded into weights"))
        // Skipped beside a LoRA it leaves something to merge; alone it would leave a copy of the
        // base, which is refused (NumbersTests).
        let both = folder + "/both.peftpack"
        #expect(try CLI.run(["import", PipelineVerifyTests.adapterFolder(of: "llama_lora"), PipelineVerifyTests.adapterFolder(of: "llama_prefix"),
                             "-o", both, "--name", "lora", "--name", "prefix"]).status == 0)
        let skipped = try CLI.run(["merge", "--base", "\(Self.fixtures)/models/llama-tiny", both, "-o", folder + "/out", "--skip-unmergeable", "--json"])
        #expect(skipped.status == 0)
        #expect(skipped.stdout.contains("\"skippedAdapters\" : [\n    \"prefix\""))
    }

    @Test func outputOverInputOrExistingFolderIsRefused() throws {
        let pack = try CLITests.importCase("llama_ia3")
        let base = "\(Self.fixtures)/models/llama-tiny"
        #expect(try CLI.run(["merge", "--base", base, pack, "-o", base]).status == 2)
        let folder = Fixtures.temporaryDirectory()
        #expect(try CLI.run(["merge", "--base", base, pack, "-o", folder + "/out"]).status == 0)
        let again = try CLI.run(["merge", "--base", base, pack, "-o", folder + "/out"])
        #expect(again.status == 2)
        #expect(again.stderr.contains("--force"))
    }

    /// The same base in another dtype (llama-tiny-bf16 is llama-tiny converted by transformers,
    /// fixturegen/base_models.py) merges, with one warning saying so instead of a refusal.
    @Test func dtypeOnlyDifferenceWarnsAndMerges() throws {
        let folder = Fixtures.temporaryDirectory()
        let pack = folder + "/bf16.peftpack"
        #expect(try CLI.run(["import", "\(Self.fixtures)/cases/llama_bf16_lora/adapter", "-o", pack, "--base", "\(Self.fixtures)/models/llama-tiny-bf16"]).status == 0)
        let result = try CLI.run(["merge", "--base", "\(Self.fixtures)/models/llama-tiny", pack, "-o", folder + "/out"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1)
        #expect(result.stderr.contains("warning") && result.stderr.contains("BF16 → F32") && result.stderr.contains("content cannot be compared"), "\(result.stderr)")
    }
}
