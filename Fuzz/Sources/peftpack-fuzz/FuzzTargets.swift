import Foundation
import PeftPack

/// The parsers that read files from strangers, one target each. Every input must come back as a
/// value or a thrown error: a crash, hang, leak or huge allocation is a bug. Built two ways:
/// with `-sanitize=fuzzer,address -D FUZZING` (Fuzz/run.sh) libFuzzer drives
/// LLVMFuzzerTestOneInput with the target named by PEFTPACK_FUZZ_TARGET; in a normal build this is
/// `peftpack-fuzz TARGET FILE…`, which replays inputs (crash reproducers, the seed corpus).
enum FuzzTargets {
    static let names = ["pack", "pack-structure", "safetensors", "pickle", "config", "gguf", "bnb"]

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
        case "pack-structure":
            // The input is a pack taken apart (PackParts): random bytes in it reach the index
            // parser, the document decoder and every chunk decoder, not only the checksums.
            guard let pack = PackParts.assemble(bytes) else { return }
            #if FUZZING
            PackReader.fuzzingSkipsChunkChecksums = true
            #endif
            pack.withUnsafeBytes { packBytes in
                withFile(packBytes) { path in
                    let reader = try PackReader(path: path)
                    _ = try? reader.adapterDocument()
                    for entry in reader.tensors {
                        _ = try? reader.readTensor(entry.name)
                        _ = try? reader.withRawBytes(entry.name) { $0.count }
                    }
                    try? reader.verifyAll()
                }
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
                if let base = try? GGUFBaseModel(path: path) {
                    for name in base.names { _ = try base.tensor(name) }
                }
            }
        case "bnb":
            // A bitsandbytes checkpoint: quant states, companions and their sizes, then every value.
            withFile(bytes) { path in
                let weights = try BitsandbytesWeights(checkpoint: Checkpoint(path: path))
                for name in weights.names { _ = try? weights.tensor(name) }
            }
        default:
            fatalError("unknown fuzz target \(target); one of \(names.joined(separator: ", "))")
        }
    }
}

/// The form the structure-aware pack target mutates: a 4-byte little-endian length n, the n bytes
/// of the pack's data section (what follows the preamble, up to the header), then the header's
/// JSON uncompressed. Assembling compresses the JSON and writes a preamble with correct
/// checksums, so mutations land in the fields the reader interprets.
enum PackParts {
    static func assemble(_ input: UnsafeRawBufferPointer) -> [UInt8]? {
        guard input.count >= 4 else { return nil }
        let claimed = Int(input.loadUnaligned(as: UInt32.self).littleEndian)
        let dataLength = min(claimed, input.count - 4)
        let data = input[4..<(4 + dataLength)]
        let json = UnsafeRawBufferPointer(rebasing: input[(4 + dataLength)...])
        guard let header = try? Zstd.compress(json, level: 1) else { return nil }
        var file = [UInt8](repeating: 0, count: PackFormat.preambleSize)
        file += data
        file += [UInt8](repeating: 0, count: (PackFormat.alignment - file.count % PackFormat.alignment) % PackFormat.alignment)
        let headerOffset = file.count
        file += header
        var preamble = PackFormat.magic
        func append<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { preamble += $0 } }
        append(PackFormat.majorVersion)
        append(PackFormat.minorVersion)
        append(UInt32(0))
        append(UInt64(headerOffset))
        append(UInt64(header.count))
        append(UInt64(json.count))
        append(XXH3.hash64(header))
        append(UInt64(0))
        append(XXH3.hash64(preamble))
        file.replaceSubrange(0..<PackFormat.preambleSize, with: preamble)
        return file
    }

    /// A real pack taken apart into that form (for the seed corpus).
    static func disassemble(_ pack: [UInt8]) throws -> [UInt8] {
        try pack.withUnsafeBytes { bytes in
            guard bytes.count >= PackFormat.preambleSize else { throw CocoaError(.fileReadCorruptFile) }
            let headerOffset = Int(bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self).littleEndian)
            let rawLength = Int(bytes.loadUnaligned(fromByteOffset: 32, as: UInt64.self).littleEndian)
            guard headerOffset >= PackFormat.preambleSize, headerOffset <= bytes.count, rawLength <= PackFormat.maximumRawHeader else {
                throw CocoaError(.fileReadCorruptFile)
            }
            var json = [UInt8](repeating: 0, count: rawLength)
            try json.withUnsafeMutableBytes { try Zstd.decompress(UnsafeRawBufferPointer(rebasing: bytes[headerOffset...]), into: $0) }
            let data = Array(bytes[PackFormat.preambleSize..<headerOffset])
            var parts: [UInt8] = []
            withUnsafeBytes(of: UInt32(data.count).littleEndian) { parts += $0 }
            return parts + data + json
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
        if arguments.first == "disassemble-pack", arguments.count == 3 {
            let pack = try [UInt8](Data(contentsOf: URL(fileURLWithPath: arguments[arguments.startIndex + 1])))
            try Data(try PackParts.disassemble(pack)).write(to: URL(fileURLWithPath: arguments[arguments.startIndex + 2]))
            return
        }
        guard let target = arguments.first, FuzzTargets.names.contains(target) else {
            FileHandle.standardError.write(Data("usage: peftpack-fuzz \(FuzzTargets.names.joined(separator: "|")) FILE…\n       peftpack-fuzz disassemble-pack PACK OUT\n".utf8))
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
