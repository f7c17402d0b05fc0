import Foundation
import Testing
@testable import PeftPack

/// An output path must be a regular file (file outputs) or a folder (folder outputs) when it
/// exists, even with --force: `import … -o /dev/null --force` used to replace the device node with
/// a regular file (as root). Tested on nodes made in a temporary folder, never /dev/null itself.
@Suite struct OutputKindTests {
    static let adapter = Fixtures.path("cases/llama_lora/adapter")

    @Test func aFifoIsNeverReplaced() throws {
        let path = Fixtures.temporaryDirectory() + "/fifo"
        #expect(mkfifo(path, 0o600) == 0)
        let result = try CLI.run(["import", Self.adapter, "-o", path, "--force"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("\(path): is a fifo, not a regular file or folder"), "\(result.stderr)")
        var status = stat()
        #expect(lstat(path, &status) == 0 && (status.st_mode & S_IFMT) == S_IFIFO)
        #expect(throws: OutputError.special(path: path, what: "a fifo")) {
            try OutputDestination.claim(path, as: .folder, force: true, inputs: [])
        }
    }

    /// mknod needs root (CAP_MKNOD); the trial that found this ran as root.
    @Test(.enabled(if: getuid() == 0)) func aCharacterDeviceIsNeverReplaced() throws {
        let path = Fixtures.temporaryDirectory() + "/null"
        // 1,3 is /dev/null's device number: a harmless node of the kind the trial replaced.
        #expect(mknod(path, S_IFCHR | 0o600, dev_t((1 << 8) | 3)) == 0)
        for command in [["import", Self.adapter, "-o", path, "--force"],
                        ["extract", "--base", Fixtures.path("models/llama-tiny"), "--finetuned", Fixtures.path("models/llama-tiny-ft"), "--rank", "2", "-o", path, "--force"]] {
            let result = try CLI.run(command)
            #expect(result.status == 2)
            #expect(result.stderr.contains("\(path): is a character device"), "\(result.stderr)")
        }
        var status = stat()
        #expect(lstat(path, &status) == 0 && (status.st_mode & S_IFMT) == S_IFCHR)
    }

    @Test func anEmptyOutputPathIsRefusedByEveryWritingCommand() throws {
        let pack = Fixtures.temporaryDirectory() + "/lora.peftpack"
        _ = try PackImport.run(sources: [.init(path: Self.adapter, name: nil)], output: pack, baseFolder: nil, level: 3)
        let llama = Fixtures.path("models/llama-tiny")
        for command in [["import", Self.adapter, "-o", ""], ["merge", "--base", llama, pack, "-o", ""], ["stack", pack, "-o", ""],
                        ["export", pack, "-o", ""], ["extract", "--base", llama, "--finetuned", Fixtures.path("models/llama-tiny-ft"), "-o", ""]] {
            let result = try CLI.run(command)
            #expect(result.status == 2, "\(command[0])")
            #expect(result.stderr == "peftpack: error: the output path is empty; give a file or folder path\n", "\(command[0]): \(result.stderr)")
        }
    }
}
