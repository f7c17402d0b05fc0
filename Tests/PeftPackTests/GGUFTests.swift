import Foundation
import Testing
@testable import PeftPack

/// GGUF LoRA export and import. That llama.cpp's reader sees the right ΔW is checked with the
/// `gguf` package against PEFT in tests/python/check_gguf_exports.py; here: pack → GGUF → pack keeps
/// the outputs (runtime, against PEFT's reference), refusals say why, malformed files are refused.
@Suite struct GGUFTests {
    static func roundTrip(_ caseName: String, dtype: GGUF.ElementType = .f32) throws -> (original: String, back: String) {
        let pack = try PipelineVerifyTests.pack(caseName)
        let folder = Fixtures.temporaryDirectory()
        _ = try PackExport.run(pack: pack, output: folder + "/adapter.gguf", format: .gguf, name: nil, force: false, ggufType: dtype)
        _ = try PackImport.run(sources: [.init(path: folder + "/adapter.gguf", name: nil)], output: folder + "/back.peftpack",
                               baseFolder: try PipelineVerifyTests.baseFolder(of: caseName), level: 3)
        return (pack, folder + "/back.peftpack")
    }

    /// Through GGUF and back, the adapter reproduces the output PEFT recorded (fp32 factors; the
    /// scale folded into B and divided out again rounds at most twice per element).
    @Test(arguments: ["llama_lora", "llama_rslora_patterns", "gpt2_lora_fan_in_fan_out"])
    func packToGGUFToPackKeepsTheOutputs(caseName: String) throws {
        let (_, back) = try Self.roundTrip(caseName)
        let report = try Verify.run(pack: back, base: try PipelineVerifyTests.baseFolder(of: caseName), adapterNames: [],
                                    targets: [.reference(path: Fixtures.path("cases/\(caseName)/\(caseName).ref.safetensors"), key: nil)],
                                    inputShape: (1, 1), seed: 0, tolerance: .init(absolute: 0, relative: 1e-5))
        #expect(report.passed, "\(caseName): max rel \(report.comparisons[0].maxRelError)")
    }

    @Test func q8IsCloseButNotExact() throws {
        let (original, back) = try Self.roundTrip("llama_lora", dtype: .q8_0)
        let report = try Verify.run(pack: back, base: Fixtures.path("models/llama-tiny"), adapterNames: [], targets: [.pack(path: original)],
                                    inputShape: (2, 8), seed: 1, tolerance: .init(absolute: 0, relative: 1e-2))
        #expect(report.passed)
        #expect(report.comparisons[0].maxAbsError > 0)
    }

    @Test(arguments: [("llama_dora", "DoRA"), ("llama_ia3", "IA3"), ("llama_prefix", "LoRA only"), ("llama_lora_modules_to_save", "whole")])
    func whatGGUFCannotExpressIsRefused(caseName: String, reason: String) throws {
        let pack = try PipelineVerifyTests.pack(caseName)
        let output = Fixtures.temporaryDirectory() + "/adapter.gguf"
        do {
            _ = try PackExport.run(pack: pack, output: output, format: .gguf, name: nil, force: false)
            Issue.record("\(caseName) exported")
        } catch let error as InputError {
            #expect(error.description.contains(reason), "\(error)")
        }
        #expect(!FileManager.default.fileExists(atPath: output))
    }

    @Test func malformedFilesAreRefused() throws {
        let pack = try PipelineVerifyTests.pack("llama_lora")
        let folder = Fixtures.temporaryDirectory()
        _ = try PackExport.run(pack: pack, output: folder + "/good.gguf", format: .gguf, name: nil, force: false)
        let good = try [UInt8](Data(contentsOf: URL(fileURLWithPath: folder + "/good.gguf")))
        var cases: [(String, [UInt8])] = []
        cases.append(("bad magic", [UInt8]("GGUX".utf8) + good.dropFirst(4)))
        var version = good
        version[4] = 9
        cases.append(("version", version))
        for length in [3, 10, 30, 200, good.count / 2, good.count - 1] { cases.append(("truncated", Array(good.prefix(length)))) }
        var hugeCount = good
        hugeCount.replaceSubrange(8..<16, with: [UInt8](repeating: 0xFF, count: 8))
        cases.append(("huge count", hugeCount))
        for (label, bytes) in cases {
            let path = folder + "/bad.gguf"
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            #expect(throws: (any Error).self, "\(label)") {
                _ = try PackImport.run(sources: [.init(path: path, name: nil)], output: folder + "/out.peftpack",
                                       baseFolder: Fixtures.path("models/llama-tiny"), level: 3)
            }
            #expect(!FileManager.default.fileExists(atPath: folder + "/out.peftpack"))
        }
        // A well-formed adapter for another model: shapes inconsistent with the base.
        _ = try PackExport.run(pack: try PipelineVerifyTests.pack("llama_lora"), output: folder + "/llama.gguf", format: .gguf, name: nil, force: false)
        #expect(throws: InputError.self) {
            _ = try PackImport.run(sources: [.init(path: folder + "/llama.gguf", name: nil)], output: folder + "/out.peftpack",
                                   baseFolder: Fixtures.path("models/llama-tiny-bf16").replacingOccurrences(of: "llama-tiny-bf16", with: "gpt2-tiny"), level: 3)
        }
    }
}
