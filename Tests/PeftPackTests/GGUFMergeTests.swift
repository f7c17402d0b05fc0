import Foundation
import Testing
@testable import PeftPack

/// Merging a LoRA into a GGUF base, against what fixtures/data/gguf_merge computed in Python with
/// gguf-py from the same committed bases (fixturegen/gguf_merge.py): the exact merge in float64,
/// rounded once to F16/BF16/F32 for a default merge, quantized by gguf.quants.quantize from its
/// float32 value for `same`. Bytes are compared exactly: both sides round the same float64 value
/// once (F16/BF16/F32) or quantize the same float32 values with the same algorithm, so any
/// difference is a defect. The survival figures are sums over the same values in float64 in
/// another order: 1e-9 relative.
@Suite struct GGUFMergeTests {
    static let expected = Fixtures.path("gguf_merge/expected.safetensors")
    static let lora = Fixtures.path("cases/llama_lora/adapter")
    static let kLoRA = Fixtures.path("gguf_merge/k_lora")

    static func base(_ label: String) -> String {
        label == "k_quants" ? Fixtures.path("gguf_base/llama-k-quants.gguf") : Fixtures.path("gguf_base/llama-tiny-\(label.replacingOccurrences(of: "_small", with: "")).gguf")
    }

    /// llama_lora changes every projection of llama-tiny's 2 layers; k_lora those of its 1 layer.
    static func mergedCount(_ label: String) -> Int { label == "k_quants" ? 7 : 14 }

    static func pack(_ adapter: String, base: String) throws -> String {
        let output = Fixtures.temporaryDirectory() + "/adapter.peftpack"
        _ = try PackImport.run(sources: [.init(path: adapter, name: nil)], output: output, baseFolder: base, level: 3)
        return output
    }

    /// Merges and returns the output file with the expected entries of `label:mode:`.
    static func merged(_ label: String, mode: String, options: Merge.Options = Merge.Options(), weight: Double = 1) throws
        -> (output: GGUF.File, base: GGUF.File, expected: [String: [UInt8]], report: Merge.Report) {
        let base = base(label)
        let pack = try pack(label == "k_quants" ? kLoRA : lora, base: base)
        let output = Fixtures.temporaryDirectory() + "/merged.gguf"
        let report = try Merge.run(base: base, inputs: [MergeInput(pack: pack, adapter: nil, weight: weight)], output: output, options: options)
        let file = try SafetensorsFile(path: expected)
        var entries: [String: [UInt8]] = [:]
        for name in file.names where name.hasPrefix("\(label):\(mode):") {
            entries[String(name.dropFirst("\(label):\(mode):".count))] = try file.tensor(name).bytes
        }
        return (try GGUF.File(path: output), try GGUF.File(path: base), entries, report)
    }

    static func bytes(_ file: GGUF.File, _ name: String) -> [UInt8]? {
        file.tensors.first { $0.name == name }.map { entry in file.withBytes(entry) { Array($0) } }
    }

    /// The output holds the base's metadata and tensor list, untouched tensors byte for byte.
    static func checkUntouched(_ output: GGUF.File, base: GGUF.File, merged: Set<String>) {
        #expect(output.metadata.map(\.key) == base.metadata.map(\.key))
        #expect(output.tensors.map(\.name) == base.tensors.map(\.name))
        #expect(output.tensors.map(\.shape) == base.tensors.map(\.shape))
        for entry in base.tensors where !merged.contains(entry.name) {
            #expect(bytes(output, entry.name) == bytes(base, entry.name), "\(entry.name) copied byte for byte")
        }
    }

    @Test(arguments: ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1"])
    func aDefaultMergeIsTheExactMergeRoundedOnce(label: String) throws {
        let (output, base, expected, report) = try Self.merged(label, mode: "auto")
        #expect(expected.count == 14 && report.tensorsTouched == 14)
        let types = Dictionary(uniqueKeysWithValues: base.tensors.map { ($0.name, $0.type) })
        for (name, bytes) in expected {
            let written = output.tensors.first { $0.name == name }!
            let wanted: GGUF.ElementType = types[name] == .f32 ? .f32 : types[name] == .bf16 ? .bf16 : .f16
            #expect(written.type == wanted)
            #expect(Self.bytes(output, name) == bytes, "\(label): \(name)")
        }
        Self.checkUntouched(output, base: base, merged: Set(expected.keys))
        #expect(report.requantized == nil)
    }

    /// k_quants: Q4_K, Q5_K and Q6_K as a Q4_K_M file mixes them, against ggml's reference
    /// quantizer (scripts/ggml-quantize-reference.sh, the pinned llama.cpp source built portably).
    @Test(arguments: ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_0_small", "q5_1_small", "q8_0_small", "k_quants"])
    func sameRequantizesAsTheReferenceQuantizesTheExactMerge(label: String) throws {
        let weight = label.hasSuffix("_small") ? 0.02 : 1
        let (output, base, expected, report) = try Self.merged(label, mode: "same", options: Merge.Options(keepsQuantization: true), weight: weight)
        #expect(expected.count == Self.mergedCount(label))
        for (name, bytes) in expected {
            #expect(output.tensors.first { $0.name == name }!.type == base.tensors.first { $0.name == name }!.type)
            #expect(Self.bytes(output, name) == bytes, "\(label): \(name)")
        }
        Self.checkUntouched(output, base: base, merged: Set(expected.keys))
        try Self.checkSurvival(label, report: report, base: base)
    }

    /// The report's figures, per merged tensor, against Python's from the same tensors.
    static func checkSurvival(_ label: String, report: Merge.Report, base: GGUF.File) throws {
        let file = try SafetensorsFile(path: expected)
        let survival = try #require(report.requantized)
        #expect(survival.count == mergedCount(label))
        // The report names checkpoint tensors; the fixture, the file's.
        let model = try GGUFBaseModel(path: base.path)
        for measured in survival {
            let gguf = model.storedEntry(measured.tensor)!.entry.name
            let figures = try file.tensor("\(label):survival:\(gguf)").bytes.withUnsafeBytes { Array($0.bindMemory(to: Double.self)) }
            for (ours, theirs) in zip([measured.normRatio, measured.cosine, measured.survival, measured.unchangedCodeShare], figures) {
                #expect(abs(ours - theirs) <= 1e-9 * max(abs(theirs), 1e-12), "\(label): \(measured.tensor) \(ours) vs \(theirs)")
            }
        }
    }

    /// Below --min-survival: named in the report, and with a promotion written at the wider type
    /// from the same fp32 merge (Q8_0 bytes as gguf-py quantizes them: the q8_0 fixture's).
    @Test func weightsKeepingTooLittleAreNamedAndPromoted() throws {
        let options = Merge.Options(keepsQuantization: true, minSurvival: 0.5, promotion: Promotion(precision: .q8_0, allMerged: false))
        let (output, _, _, report) = try Self.merged("q4_0_small", mode: "same", options: options, weight: 0.02)
        let below = try #require(report.belowMinSurvival)
        #expect(below.count == 14, "every module of the small-weight merge keeps under 5% on Q4_0")
        #expect(output.tensors.filter { $0.type == .q8_0 }.count == 14)
        #expect(report.requantized!.allSatisfy { $0.promotedTo == "Q8_0" && $0.type == "Q4_0" })
        // Q8_0 of the same exact merge: what the q8_0_small fixture quantized (its base differs,
        // so compare the decoded values with the exact merge instead: within a Q8_0 step).
        let plain = try Self.merged("q4_0_small", mode: "same", options: Merge.Options(keepsQuantization: true), weight: 0.02)
        #expect(plain.report.belowMinSurvival?.count == 14)
        #expect(plain.output.tensors.filter { $0.type == .q8_0 }.isEmpty)
    }

    @Test func aTypeThatDoesNotFitTheRowsIsRefusedBeforeWriting() throws {
        // llama-tiny's rows are 64 or 128 elements: not whole 256-element K-quant blocks.
        let base = Self.base("q8_0")
        let pack = try Self.pack(Self.lora, base: base)
        let output = Fixtures.temporaryDirectory() + "/merged.gguf"
        var options = Merge.Options()
        options.quantizedType = "q4_k"
        #expect(throws: InputError.self) {
            _ = try Merge.run(base: base, inputs: [MergeInput(pack: pack, adapter: nil, weight: 1)], output: output, options: options)
        }
        #expect(!FileManager.default.fileExists(atPath: output))
    }

    /// A merge at adapter weight 1.05 is another model (the negative control moves PEFT's merge
    /// as much as ours: it is the adapter scaled), and verify's weight check names it.
    @Test(arguments: ["q8_0", "q4_0"])
    func verifyPassesTheMergeAndFailsAPerturbedOne(label: String) throws {
        let base = Self.base(label)
        let pack = try Self.pack(Self.lora, base: base)
        for (weight, passes) in [(1.0, true), (1.05, false)] {
            let output = Fixtures.temporaryDirectory() + "/merged.gguf"
            _ = try Merge.run(base: base, inputs: [MergeInput(pack: pack, adapter: nil, weight: weight)], output: output,
                              options: Merge.Options(baseCheck: .shapes, keepsQuantization: true))
            let report = try Verify.run(pack: pack, base: base, adapterNames: [], targets: [.merged(folder: output)], inputShape: (2, 16), seed: 0)
            #expect(report.comparisons[0].weights?.passed == passes, "weight \(weight)")
            #expect(report.comparisons[0].passed == passes, "weight \(weight)")
        }
    }
}
