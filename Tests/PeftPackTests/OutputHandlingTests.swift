import Foundation
import Testing
@testable import PeftPack

/// The one output rule of every writing command (import, extract, stack, merge, export as a
/// folder or GGUF): an existing output is refused with one line and exit 2 unless --force; an
/// unwritable destination is one line naming the path and the reason, exit 2, nothing created;
/// stale temporaries of dead writers are removed from the output folder.
///
/// The tests run as root, where permission bits do not bite, so the unwritable destinations are
/// ones that refuse root too: a folder under /sys (sysfs refuses new files: EACCES) and a path
/// under a regular file (ENOTDIR).
@Suite struct OutputHandlingTests {
    static let models = Fixtures.path("models")

    struct Command {
        var name: String
        var arguments: (String) -> [String]
        var outputName: String
    }

    /// One of each command and output kind: pack files, a model folder, a sharded model folder, a
    /// PEFT folder, an AdapterHub folder, a GGUF file.
    static func commands(in folder: String) throws -> [Command] {
        let lora = folder + "/lora.peftpack", houlsby = folder + "/houlsby.peftpack"
        #expect(try CLI.run(["import", Fixtures.path("cases/llama_lora/adapter"), "-o", lora, "--base", "\(models)/llama-tiny"]).status == 0)
        #expect(try CLI.run(["import", Fixtures.path("cases/bert_houlsby/adapter_bin"), "-o", houlsby]).status == 0)
        return [
            Command(name: "import", arguments: { ["import", Fixtures.path("cases/llama_lora/adapter"), "-o", $0] }, outputName: "imported.peftpack"),
            Command(name: "extract", arguments: { ["extract", "--base", "\(models)/llama-tiny", "--finetuned", "\(models)/llama-tiny-ft", "-o", $0, "--rank", "2"] },
                    outputName: "extracted.peftpack"),
            Command(name: "stack", arguments: { ["stack", lora, lora, "-o", $0] }, outputName: "stacked.peftpack"),
            Command(name: "convert", arguments: { ["convert", lora, "--to", "lora", "--rank", "4", "-o", $0] }, outputName: "converted.peftpack"),
            Command(name: "resize", arguments: { ["resize", lora, "--rank", "4", "-o", $0] }, outputName: "resized.peftpack"),
            Command(name: "merge", arguments: { ["merge", "--base", "\(models)/llama-tiny", lora, "-o", $0] }, outputName: "merged"),
            Command(name: "merge sharded", arguments: { ["merge", "--base", "\(models)/llama-tiny", lora, "-o", $0, "--max-shard-size", "100KB"] },
                    outputName: "sharded"),
            Command(name: "export peft", arguments: { ["export", lora, "-o", $0] }, outputName: "peft-out"),
            Command(name: "export adapterhub", arguments: { ["export", houlsby, "-o", $0] }, outputName: "adapterhub-out"),
            Command(name: "export gguf", arguments: { ["export", lora, "-o", $0] }, outputName: "lora.gguf"),
        ]
    }

    static func oneLine(_ result: CLI.Result) -> Bool {
        result.stderr.split(separator: "\n", omittingEmptySubsequences: true).count == 1
    }

    @Test func existingOutputIsRefusedUnlessForceForEveryCommand() throws {
        let folder = Fixtures.temporaryDirectory()
        for command in try Self.commands(in: folder) {
            let output = folder + "/" + command.outputName
            let first = try CLI.run(command.arguments(output))
            #expect(first.status == 0, "\(command.name): \(first.stderr)")
            let before = try CrashSafetyTests.hashes([output])
            let again = try CLI.run(command.arguments(output))
            #expect(again.status == 2, "\(command.name): exit \(again.status)")
            #expect(Self.oneLine(again) && again.stderr.contains("\(output): already exists; pass --force to replace it"), "\(command.name): \(again.stderr)")
            #expect(try CrashSafetyTests.hashes([output]) == before, "\(command.name): the existing output changed")
            let forced = try CLI.run(command.arguments(output) + ["--force"])
            #expect(forced.status == 0, "\(command.name) --force: \(forced.stderr)")
        }
    }

    @Test func unwritableDestinationIsOneLineExitTwoForEveryCommand() throws {
        let folder = Fixtures.temporaryDirectory()
        let regularFile = folder + "/a-file"
        FileManager.default.createFile(atPath: regularFile, contents: Data("x".utf8))
        var locations = [(parent: regularFile, reason: "it is not a folder")]
        #if os(Linux)
        locations.append((parent: "/sys", reason: "Permission denied"))
        #endif
        for command in try Self.commands(in: folder) {
            for location in locations {
                let output = location.parent + "/" + command.outputName
                let result = try CLI.run(command.arguments(output))
                #expect(result.status == 2, "\(command.name) → \(output): exit \(result.status), \(result.stderr)")
                #expect(Self.oneLine(result) && result.stderr.contains(output) && result.stderr.contains(location.reason),
                        "\(command.name) → \(output): \(result.stderr)")
                #expect(!result.stderr.contains("NSCocoaErrorDomain") && !result.stderr.contains("internal error"))
                #expect(!FileManager.default.fileExists(atPath: output))
            }
        }
        #expect(try String(contentsOfFile: regularFile, encoding: .utf8) == "x")
    }

    @Test func aFileNeverReplacesAFolderNorTheReverseEvenWithForce() throws {
        let folder = Fixtures.temporaryDirectory()
        let existingFolder = folder + "/a-folder", existingFile = folder + "/a-file"
        try FileManager.default.createDirectory(atPath: existingFolder, withIntermediateDirectories: false)
        FileManager.default.createFile(atPath: existingFolder + "/keep", contents: Data("keep".utf8))
        FileManager.default.createFile(atPath: existingFile, contents: Data("keep".utf8))
        let intoFolder = try CLI.run(["import", Fixtures.path("cases/llama_lora/adapter"), "-o", existingFolder, "--force"])
        #expect(intoFolder.status == 2 && intoFolder.stderr.contains("is a folder"), "\(intoFolder.stderr)")
        let lora = folder + "/lora.peftpack"
        #expect(try CLI.run(["import", Fixtures.path("cases/llama_lora/adapter"), "-o", lora]).status == 0)
        let overFile = try CLI.run(["merge", "--base", "\(Self.models)/llama-tiny", lora, "-o", existingFile, "--force"])
        #expect(overFile.status == 2 && overFile.stderr.contains("is a file"), "\(overFile.stderr)")
        #expect(try String(contentsOfFile: existingFolder + "/keep", encoding: .utf8) == "keep")
        #expect(try String(contentsOfFile: existingFile, encoding: .utf8) == "keep")
    }

    /// A dead process's temporaries (for any output of the folder, file and folder forms) go; a
    /// live writer's stay; a user's own hidden files stay.
    @Test func staleTemporariesOfDeadWritersAreRemovedFromTheOutputFolder() throws {
        let folder = Fixtures.temporaryDirectory()
        let finished = Process()
        finished.executableURL = URL(fileURLWithPath: "/bin/true")
        try finished.run()
        finished.waitUntilExit()
        let dead = finished.processIdentifier, live = getpid()
        let deadOnes = [".other.peftpack.\(dead)-123.tmp", ".merged.tmp-\(dead)-456", ".merged.tmp-\(dead)-456.old"]
        let kept = [".other.peftpack.\(live)-123.tmp", ".merged.tmp-\(live)-789", ".my-notes.tmp", ".cache"]
        for name in deadOnes + kept {
            if name.contains("tmp-") { try FileManager.default.createDirectory(atPath: folder + "/" + name, withIntermediateDirectories: false) }
            else { FileManager.default.createFile(atPath: folder + "/" + name, contents: Data()) }
        }
        let result = try CLI.run(["import", Fixtures.path("cases/llama_lora/adapter"), "-o", folder + "/new.peftpack"])
        #expect(result.status == 0, "\(result.stderr)")
        let left = Set(try FileManager.default.contentsOfDirectory(atPath: folder))
        #expect(left == Set(kept + ["new.peftpack"]), "\(left.sorted())")
    }

    @Test func helpOfAnUnknownCommandExitsTwo() throws {
        let unknown = try CLI.run(["help", "nosuch"])
        #expect(unknown.status == 2)
        #expect(Self.oneLine(unknown) && unknown.stderr.contains("no command named nosuch") && unknown.stderr.contains("merge"), "\(unknown.stderr)")
        let nested = try CLI.run(["help", "merge", "nosuch"])
        #expect(nested.status == 2 && Self.oneLine(nested), "\(nested.stderr)")
        for known in [["help"], ["help", "merge"], ["help", "import"]] {
            let result = try CLI.run(known)
            #expect(result.status == 0 && result.stdout.contains("USAGE"), "\(known)")
        }
        #expect(try CLI.run(["help", "import"]).stdout.contains("--force"))
    }
}
