import Foundation
import Testing
@testable import PeftPack

/// SIGKILL at random moments: the output path then holds nothing or a complete, valid result
/// (temporary files beside it are allowed: they are hidden, never take the output's name, and the
/// next run removes them), and the inputs are byte-for-byte what they were. SIGINT and SIGTERM
/// while the temporary output exists: the run removes it and exits 130 / 143, leaving nothing
/// beside the output.
@Suite struct CrashSafetyTests {
    static let models = Fixtures.path("models")

    static func hashes(_ paths: [String]) throws -> [String: UInt64] {
        var out: [String: UInt64] = [:]
        for root in paths {
            var isFolder: ObjCBool = false
            FileManager.default.fileExists(atPath: root, isDirectory: &isFolder)
            let files = isFolder.boolValue ? try FileManager.default.subpathsOfDirectory(atPath: root).map { root + "/" + $0 } : [root]
            for file in files where !(try FileManager.default.attributesOfItem(atPath: file)[.type] as? FileAttributeType == .typeDirectory) {
                out[file] = XXH3.hash64(try [UInt8](Data(contentsOf: URL(fileURLWithPath: file))))
            }
        }
        return out
    }

    /// Runs the command to completion once to learn its duration, then kills it at spread-out
    /// moments within that time and checks what is left.
    static func killAtRandomMoments(_ arguments: (String) -> [String], inputs: [String], output: String, kills: Int,
                                    valid: (String) throws -> Bool) throws -> (killed: Int, completed: Int) {
        let before = try hashes(inputs)
        let start = Date()
        let first = try CLI.run(arguments(output))
        #expect(first.status == 0, "\(first.stderr)")
        let duration = Date().timeIntervalSince(start)
        try? FileManager.default.removeItem(atPath: output)
        var random = SplitMix64(seed: 7)
        var killed = 0, completed = 0
        for _ in 0..<kills {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: CLI.binary)
            process.arguments = arguments(output)
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            usleep(useconds_t(Double(random.next() % 1000) / 1000 * duration * 1e6))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            if process.terminationReason == .uncaughtSignal { killed += 1 } else { completed += 1 }
            if FileManager.default.fileExists(atPath: output) {
                #expect(try valid(output), "a killed run left an invalid \(output)")
                try FileManager.default.removeItem(atPath: output)
            }
        }
        #expect(try hashes(inputs) == before, "inputs changed")
        // The next complete run removes what the killed ones left beside the output.
        #expect(try CLI.run(arguments(output)).status == 0)
        let folder = (output as NSString).deletingLastPathComponent, name = (output as NSString).lastPathComponent
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasPrefix("." + name + ".") }
        #expect(leftovers.isEmpty, "left beside \(output): \(leftovers)")
        try FileManager.default.removeItem(atPath: output)
        return (killed, completed)
    }

    @Test func mergeExtractImportStackSurviveSIGKILL() throws {
        let folder = Fixtures.temporaryDirectory()
        let lora = folder + "/lora.peftpack"
        _ = try CLI.run(["import", Fixtures.path("cases/llama_lora/adapter"), "-o", lora, "--base", "\(Self.models)/llama-tiny"])
        let validPack: (String) throws -> Bool = { path in
            let reader = try PackReader(path: path)
            for entry in reader.tensors { _ = try reader.readTensor(entry.name) }
            return true
        }
        let commands: [(String, (String) -> [String], [String], String, (String) throws -> Bool)] = [
            ("merge", { ["merge", "--base", "\(Self.models)/llama-tiny", lora, "-o", $0] }, ["\(Self.models)/llama-tiny", lora], folder + "/merged",
             { path in let checkpoint = try Checkpoint(path: path); for name in checkpoint.names { let _: HostTensor = try checkpoint.tensor(name) }; return true }),
            ("extract", { ["extract", "--base", "\(Self.models)/llama-tiny", "--finetuned", "\(Self.models)/llama-tiny-ft", "-o", $0, "--rank", "8"] },
             ["\(Self.models)/llama-tiny", "\(Self.models)/llama-tiny-ft"], folder + "/extracted.peftpack", validPack),
            ("import", { ["import", Fixtures.path("cases/llama_rslora_patterns/adapter"), "-o", $0] },
             [Fixtures.path("cases/llama_rslora_patterns/adapter")], folder + "/imported.peftpack", validPack),
            ("stack", { ["stack", lora, lora, "--weight", "0.5", "--weight", "0.5", "--rank", "4", "-o", $0] }, [lora], folder + "/stacked.peftpack", validPack),
        ]
        for (name, arguments, inputs, output, valid) in commands {
            let (killed, _) = try Self.killAtRandomMoments(arguments, inputs: inputs, output: output, kills: 12, valid: valid)
            #expect(killed > 0, "\(name): no run was killed before finishing")
        }
    }

    /// A pack, model folder or adapter folder whose every tensor reads back.
    static func isComplete(_ path: String) throws -> Bool {
        if path.hasSuffix(".peftpack") {
            let reader = try PackReader(path: path)
            for entry in reader.tensors { _ = try reader.readTensor(entry.name) }
        } else if FileManager.default.fileExists(atPath: path + "/adapter_config.json") {
            let file = try SafetensorsFile(path: path + "/adapter_model.safetensors")
            for name in file.tensorNames { _ = try file.tensor(name) }
        } else {
            let checkpoint = try Checkpoint(path: path)
            for name in checkpoint.names { let _: HostTensor = try checkpoint.tensor(name) }
        }
        return true
    }

    /// Starts the command, waits until its hidden temporary appears beside the output, then sends
    /// `signal`. Returns the exit status, or nil when the run ended before the temporary was seen.
    static func interruptWhileWriting(_ arguments: [String], output: String, signal: Int32) throws -> Int32? {
        let folder = (output as NSString).deletingLastPathComponent, prefix = "." + (output as NSString).lastPathComponent + "."
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CLI.binary)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        var seen = false
        while process.isRunning && !seen {
            seen = (try? FileManager.default.contentsOfDirectory(atPath: folder))?.contains { $0.hasPrefix(prefix) } ?? false
        }
        if seen { kill(process.processIdentifier, signal) }
        process.waitUntilExit()
        #expect(process.terminationReason == .exit, "\(arguments[0]): killed by the signal instead of exiting")
        return seen ? process.terminationStatus : nil
    }

    @Test(arguments: [SIGINT, SIGTERM])
    func interruptedRunsRemoveTheirTemporaryOutput(signal: Int32) throws {
        let folder = Fixtures.temporaryDirectory()
        let lora = folder + "/lora.peftpack"
        _ = try CLI.run(["import", Fixtures.path("cases/llama_lora/adapter"), "-o", lora, "--base", "\(Self.models)/llama-tiny"])
        let work = folder + "/out"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: false)
        let commands: [(String, (String) -> [String], String)] = [
            ("merge", { ["merge", "--base", "\(Self.models)/llama-tiny", lora, "-o", $0, "--max-shard-size", "100KB"] }, "merged"),
            ("extract", { ["extract", "--base", "\(Self.models)/llama-tiny", "--finetuned", "\(Self.models)/llama-tiny-ft", "-o", $0, "--rank", "8", "--exact"] },
             "extracted.peftpack"),
            ("import", { ["import", Fixtures.path("cases/llama_rslora_patterns/adapter"), "-o", $0, "--level", "19"] }, "imported.peftpack"),
            ("stack", { ["stack", lora, lora, "--rank", "4", "-o", $0] }, "stacked.peftpack"),
            ("export", { ["export", lora, "-o", $0] }, "exported"),
        ]
        for (name, arguments, outputName) in commands {
            let output = work + "/" + outputName
            var interrupted = 0
            for _ in 0..<40 where interrupted < 3 {
                let status = try Self.interruptWhileWriting(arguments(output), output: output, signal: signal)
                #expect(status == nil || status == 128 + signal || status == 0, "\(name): exit \(status ?? -1)")
                if status == 128 + signal {
                    interrupted += 1
                    // A signal that lands after the output was renamed into place finds it whole.
                    if FileManager.default.fileExists(atPath: output) {
                        #expect(try Self.isComplete(output), "\(name): an interrupted run left an incomplete \(output)")
                    }
                }
                try? FileManager.default.removeItem(atPath: output)
                let left = try FileManager.default.contentsOfDirectory(atPath: work)
                #expect(left.isEmpty, "\(name): left beside the output after signal \(signal): \(left)")
            }
            #expect(interrupted > 0, "\(name): no run was interrupted while its temporary existed")
        }
    }
}
