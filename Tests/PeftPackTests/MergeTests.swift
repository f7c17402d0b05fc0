import Foundation
import Testing
@testable import PeftPack

@Suite struct MergeTests {
    /// A merge into `base` other than the case's own (an un-merge from the merged model) checks
    /// names, dtypes and shapes only: its content is no longer the base's.
    static func merged(_ caseName: String, base: String? = nil, weight: Double = 1, dtype: DType? = nil,
                       packPath: String? = nil) throws -> (folder: String, pack: String) {
        let pack = try packPath ?? PipelineVerifyTests.pack(caseName)
        let output = Fixtures.temporaryDirectory() + "/merged"
        _ = try Merge.run(base: base ?? PipelineVerifyTests.baseFolder(of: caseName),
                          inputs: [MergeInput(pack: pack, adapter: nil, weight: weight)], output: output,
                          options: .init(dtype: dtype, baseCheck: base == nil ? .content : .shapes))
        return (output, pack)
    }

    /// Round to nearest bf16, ties to even, done the plain way (compare both neighbours), as an
    /// independent check of the merge's single rounding.
    static func nearestBF16(_ value: Double) -> UInt16 {
        let truncated = UInt16(truncatingIfNeeded: Float(value).bitPattern >> 16)
        let candidates = [truncated &- 1, truncated, truncated &+ 1].filter { $0 & 0x7F80 != 0x7F80 }
        func asDouble(_ bits: UInt16) -> Double { Double(Float(bitPattern: UInt32(bits) << 16)) }
        return candidates.min { a, b in
            let (da, db) = (abs(asDouble(a) - value), abs(asDouble(b) - value))
            return da != db ? da < db : a & 1 == 0
        }!
    }

    static func bits16(_ tensor: HostTensor) -> [UInt16] {
        tensor.bytes.withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
    }

    /// The bf16 merge equals the exact merge (fp64, from the fixture generator) correctly rounded,
    /// and is never further from it than PEFT's merge_and_unload.
    @Test func bf16MergeIsTheCorrectlyRoundedExactMerge() throws {
        let (folder, _) = try Self.merged("llama_bf16_lora")
        let ours = try Checkpoint(path: folder)
        let exact = try SafetensorsFile(path: Fixtures.path("cases/llama_bf16_lora/exact_merge.safetensors"))
        let peft = try SafetensorsFile(path: Fixtures.path("cases/llama_bf16_lora/merged/model.safetensors"))
        var total = 0, equal = 0
        for name in exact.names {
            let reference = try exact.tensor(name).bytes.withUnsafeBytes { Array($0.bindMemory(to: Double.self)) }
            let mine = Self.bits16(try ours.tensor(name)), theirs = Self.bits16(try peft.tensor(name))
            #expect(try ours.tensor(name).dtype == .bf16)
            for index in reference.indices {
                total += 1
                if mine[index] == Self.nearestBF16(reference[index]) { equal += 1 }
                func distance(_ bits: UInt16) -> Double { abs(Double(Float(bitPattern: UInt32(bits) << 16)) - reference[index]) }
                #expect(distance(mine[index]) <= distance(theirs[index]), "\(name)[\(index)] further from exact than PEFT")
                #expect(abs(Int(Int16(bitPattern: mine[index])) - Int(Int16(bitPattern: Self.nearestBF16(reference[index])))) <= 1)
            }
        }
        #expect(Double(equal) / Double(total) >= 0.9999, "\(total - equal) of \(total) elements not correctly rounded")
    }

    @Test func untouchedTensorsAreCopiedAndShardsKept() throws {
        let (folder, _) = try Self.merged("llama_bf16_lora")
        let base = try Checkpoint(path: Fixtures.path("models/llama-tiny-bf16"))
        let ours = try Checkpoint(path: folder)
        #expect(ours.shardFiles == base.shardFiles)
        #expect(FileManager.default.fileExists(atPath: folder + "/config.json"))
        #expect(try ours.tensor("model.embed_tokens.weight").bytes == base.tensor("model.embed_tokens.weight").bytes)
    }

    /// fp32 bases: the Swift runtime with the adapter unmerged and the merged model agree (fp32
    /// summation-order differences only), for every mergeable kind and layout.
    @Test(arguments: ["llama_lora", "llama_rslora_patterns", "gpt2_lora_fan_in_fan_out", "bert_lora_bias", "llama_lora_embedding",
                      "llama_dora", "gpt2_dora", "llama_ia3", "bert_ia3", "llama_lora_modules_to_save"])
    func verifyMergedPasses(caseName: String) throws {
        let (folder, pack) = try Self.merged(caseName)
        let report = try Verify.run(pack: pack, base: PipelineVerifyTests.baseFolder(of: caseName), adapterNames: [],
                                    targets: [.merged(folder: folder)], inputShape: (2, 12), seed: 5,
                                    tolerance: .init(absolute: 0, relative: 1e-5))
        #expect(report.passed, "\(caseName): max rel \(report.comparisons[0].maxRelError)")
    }

    /// Against PEFT's own merged weights (fp32): PEFT rounds the fp32 delta and the fp32 sum, ours
    /// rounds once from fp64, so elements may differ by a few fp32 ulps of the weight, no more.
    @Test(arguments: ["llama_lora", "gpt2_lora_fan_in_fan_out", "llama_dora", "llama_ia3", "bert_lora_bias"])
    func mergedWeightsMatchPeftMergeAndUnload(caseName: String) throws {
        let (folder, _) = try Self.merged(caseName)
        let ours = try Checkpoint(path: folder)
        let peft = try Checkpoint(path: Fixtures.path("cases/\(caseName)/merged"))
        for name in peft.names {
            guard let mine = try? ours.tensor(name) else { continue }
            let a = mine.floats(), b = try peft.tensor(name).floats()
            let scale = b.map { abs($0) }.max() ?? 0
            let worst = zip(a, b).map { abs($0 - $1) }.max() ?? 0
            #expect(worst <= 8 * scale.ulp, "\(caseName): \(name) differs by \(worst)")
        }
    }

    /// Merging with weight −1 into the merged model restores the base within one rounding step
    /// (the merge's rounding to fp32 at the merged value's magnitude).
    @Test func negativeWeightUnmerges() throws {
        let (mergedFolder, pack) = try Self.merged("llama_lora")
        let (restoredFolder, _) = try Self.merged("llama_lora", base: mergedFolder, weight: -1, packPath: pack)
        let base = try Checkpoint(path: Fixtures.path("models/llama-tiny"))
        let merged = try Checkpoint(path: mergedFolder), restored = try Checkpoint(path: restoredFolder)
        for name in base.names {
            let original = try base.tensor(name).floats(), back = try restored.tensor(name).floats(), middle = try merged.tensor(name).floats()
            for index in original.indices {
                #expect(abs(back[index] - original[index]) <= middle[index].ulp, "\(name)[\(index)]")
            }
        }
    }

    @Test func roundingLossIsReportedForTinyAdapters() throws {
        let pack = try PipelineVerifyTests.pack("llama_lora")
        let output = Fixtures.temporaryDirectory() + "/scaled"
        let report = try Merge.run(base: Fixtures.path("models/llama-tiny-bf16"), inputs: [MergeInput(pack: pack, adapter: nil, weight: 1e-4)],
                                   output: output, options: .init(force: true))
        #expect(report.adapters[0].lostShare > 0.5)
    }
}
