import Foundation
import Testing
@testable import PeftPack

@Suite struct TorchPickleTests {
    static let readableFiles = Fixtures.manifest.filter { $0.value.format == "torch-zip" && !$0.key.hasPrefix("malicious/") || $0.key == "malicious/valid_tiny.bin" }.keys.sorted()

    /// torch.save files read back with the names, dtypes, shapes and bytes torch.load gave.
    @Test(arguments: readableFiles)
    func torchSaveFileReadsBackBitExactly(relativePath: String) throws {
        let expected = Fixtures.manifest[relativePath]!
        let tensors = try TorchCheckpointReader.read(path: Fixtures.path(relativePath))
        #expect(Set(tensors.map(\.name)) == Set(expected.tensors.keys))
        for (name, tensor) in tensors {
            let reference = try #require(expected.tensors[name])
            #expect(tensor.dtype.rawValue == reference.dtype && tensor.shape == reference.shape, "\(name)")
            #expect(XXH3.hex(XXH3.hash64(tensor.bytes)) == reference.xxh3_64, "\(name)")
        }
    }

    /// Three bottleneck cases, and the LoRA, IA3 and prefix-tuning folders import refuses by name
    /// (configs/), which still read back bit-exactly.
    @Test func fixturesIncludeAdapterHubPickles() {
        #expect(Self.readableFiles.filter { $0.hasSuffix("pytorch_adapter.bin") }.count == 6)
    }

    /// Each hostile pickle is refused, naming the global it asked for; nothing runs.
    @Test(arguments: [
        ("os_system.bin", "os.system"), ("posix_system.bin", "posix.system"), ("builtins_eval.bin", "builtins.eval"),
        ("subprocess_popen.bin", "subprocess.Popen"), ("stack_global_os_system.bin", "os.system"),
        ("reduce_posix_system.bin", "posix.system"), ("torch_save_posix_system.bin", "posix.system"),
    ])
    func hostilePickleIsRefusedNamingItsGlobal(file: String, global: String) {
        #expect {
            _ = try TorchCheckpointReader.read(path: Fixtures.path("malicious/\(file)"))
        } throws: { error in
            (error as? InputError)?.kind == .forbiddenContent && "\(error)".contains("forbidden global \(global)")
        }
    }

    /// Damaged files give errors or (where no check covers the byte) different data, never a crash.
    @Test func truncationsAndFlipsNeverCrash() throws {
        let original = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("malicious/valid_tiny.bin")))
        let folder = Fixtures.temporaryDirectory()
        let path = folder + "/damaged.bin"
        var outcomes = 0
        for length in stride(from: 0, to: original.count, by: 7) {
            FileManager.default.createFile(atPath: path, contents: original.prefix(length))
            _ = try? TorchCheckpointReader.read(path: path)
            outcomes += 1
        }
        for position in stride(from: 0, to: original.count, by: max(1, original.count / 500)) {
            var damaged = original
            damaged[position] ^= 0xA5
            FileManager.default.createFile(atPath: path, contents: damaged)
            _ = try? TorchCheckpointReader.read(path: path)
            outcomes += 1
        }
        #expect(outcomes > 100)
    }
}
