import Foundation
import PeftPack

/// The parsers that read files from strangers, one target each. Every input must come back as a
/// value or a thrown error: a crash, hang, leak or huge allocation is a bug. Built two ways:
/// with `-sanitize=fuzzer,address -D FUZZING` (Fuzz/run.sh) libFuzzer drives
/// LLVMFuzzerTestOneInput with the target named by PEFTPACK_FUZZ_TARGET; in a normal build this is
/// `peftpack-fuzz TARGET FILE…`, which replays inputs (crash reproducers, the seed corpus).
enum FuzzTargets {
    static let names = ["pack", "safetensors", "pickle", "config", "gguf"]

    /// File-based readers get the input through one scratch file per process.
    static let scratch: String = {
        let folder = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        return "\(folder)/peftpack-fuzz-\(getpid())"
    }()

    static func withFile(_ bytes: UnsafeRawBufferPointer, _ body: (String) throws -> Void) {
        guard FileManager.default.createFile(atPath: scratch, contents: Data(bytes)) else { return }
        try? body(scratch)
    }

    static func run(_ target: String, _ bytes: UnsafeRawBufferPointer) {
        switch target {
        case "pack":
            withFile(bytes) { path in
                let reader = try PackReader(path: path)
                _ = try? reader.adapterDocument()
                for entry in reader.tensors { _ = try? reader.readTensor(entry.name) }
            }
        case "safetensors":
            withFile(bytes) { path in
                let file = try SafetensorsFile(path: path)
                for name in file.names { _ = try? file.tensor(name) }
            }
        case "pickle":
            withFile(bytes) { path in _ = try TorchCheckpointReader.read(path: path) }
        case "config":
            let text = String(decoding: bytes, as: UTF8.self)
            _ = try? PeftConfig(text: text, file: "fuzz")
            _ = try? AdapterHubConfig(text: text, file: "fuzz")
        case "gguf":
            withFile(bytes) { path in
                let file = try GGUF.File(path: path)
                for entry in file.tensors { _ = file.floats(entry) }
                _ = try? GGUFLoRA.importAdapter(path: path, name: nil, base: nil)
            }
        default:
            fatalError("unknown fuzz target \(target); one of \(names.joined(separator: ", "))")
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let target = ProcessInfo.processInfo.environment["PEFTPACK_FUZZ_TARGET"] ?? "pack"
    FuzzTargets.run(target, UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

#if FUZZING
/// SwiftPM links an executable's entry point as `<module>_main`; hand control to libFuzzer's driver.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

@_cdecl("peftpack_fuzz_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var arguments = argv
    return LLVMFuzzerRunDriver(&count, &arguments) { data, size in fuzzOneInput(data, size) }
}
#else
@main
struct Replay {
    static func main() throws {
        let arguments = CommandLine.arguments.dropFirst()
        guard let target = arguments.first, FuzzTargets.names.contains(target) else {
            FileHandle.standardError.write(Data("usage: peftpack-fuzz \(FuzzTargets.names.joined(separator: "|")) FILE…\n".utf8))
            exit(2)
        }
        for path in arguments.dropFirst() {
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
            bytes.withUnsafeBytes { FuzzTargets.run(target, $0) }
        }
        try? FileManager.default.removeItem(atPath: FuzzTargets.scratch)
        print("replayed \(arguments.count - 1) inputs through \(target)")
    }
}
#endif
