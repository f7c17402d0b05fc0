import Foundation
import Testing
@testable import PeftPack

/// Merging into a bitsandbytes base that stays quantized (Merge.Options.keepsQuantization), on the
/// QLoRA fixture (NF4 with double quantization, q_proj/v_proj): the base's stored layout with only
/// the merged modules' tensors rewritten, each the quantization of the fp32 merge. Byte equality
/// with PEFT's merge_and_unload is checked by tests/python/check_quantized_bases.py.
@Suite struct BitsandbytesRequantizedMergeTests {
    static let base = BitsandbytesTests.folder + "/llama-tiny-nf4"

    @discardableResult
    static func merge(keepsQuantization: Bool, dtype: DType? = nil, report: ((Merge.Report) -> Void)? = nil) throws -> String {
        let directory = Fixtures.temporaryDirectory()
        let pack = directory + "/qlora.peftpack"
        _ = try PackImport.run(sources: [.init(path: BitsandbytesTests.folder + "/llama-tiny-nf4-qlora/adapter", name: "qlora")],
                               output: pack, baseFolder: nil, level: 3)
        let output = directory + "/merged"
        let result = try Merge.run(base: base, inputs: [MergeInput(pack: pack, adapter: nil, weight: 1)], output: output,
                                   options: .init(dtype: dtype, keepsQuantization: keepsQuantization))
        report?(result)
        return output
    }

    static func isMergedModule(_ name: String) -> Bool { name.contains(".q_proj.") || name.contains(".v_proj.") }

    @Test func storedLayoutIsTheBasesWithUntouchedTensorsByteForByte() throws {
        let output = try Self.merge(keepsQuantization: true)
        let base = try Checkpoint(storedAt: Self.base), merged = try Checkpoint(storedAt: output)
        #expect(merged.storedNames == base.storedNames)
        for name in base.storedNames where !Self.isMergedModule(name) {
            #expect(try merged.tensor(name).bytes == base.tensor(name).bytes, "\(name) changed")
        }
        let changed = base.storedNames.filter { Self.isMergedModule($0) && $0.hasSuffix(".weight") }
        #expect(!changed.isEmpty)
        for name in changed { #expect(try merged.tensor(name).bytes != base.tensor(name).bytes, "\(name) not merged") }
        let config = try String(contentsOfFile: output + "/config.json", encoding: .utf8)
        #expect(config.contains("\"quantization_config\""))
    }

    @Test func mergedWeightsAreTheQuantizationOfTheFp32Merge() throws {
        let quantized = try Checkpoint(path: try Self.merge(keepsQuantization: true))
        let plain = try Checkpoint(path: try Self.merge(keepsQuantization: false, dtype: .f32))
        let base = try Checkpoint(path: Self.base)
        #expect(quantized.names == base.names)
        for name in base.names where quantized.isQuantized(name) && Self.isMergedModule(name) {
            let layout = try #require(quantized.dequantizer?.layout(name))
            let values = try plain.tensor(name).floats()
            for (storedName, tensor) in try BitsandbytesRequantizer.tensors(for: layout, values: values, stored: quantized.stored) {
                #expect(try quantized.stored.tensor(storedName).bytes == tensor.bytes, "\(storedName)")
            }
        }
    }

    /// Figures recomputed from the same tensors by tests/python/check_quantized_bases.py; here
    /// only their presence and range.
    @Test func reportsWhatSurvivedRequantizationPerMergedWeight() throws {
        var report: Merge.Report?
        try Self.merge(keepsQuantization: true) { report = $0 }
        let survival = try #require(report?.requantized)
        #expect(survival.map(\.tensor) == ["q_proj", "v_proj"].flatMap { p in [0, 1].map { "model.layers.\($0).self_attn.\(p).weight" } }.sorted())
        for entry in survival {
            #expect(entry.normRatio > 0.5 && entry.normRatio < 2, "\(entry.tensor): \(entry.normRatio)")
            #expect(entry.cosine > 0.5 && entry.cosine <= 1, "\(entry.tensor): \(entry.cosine)")
            #expect(entry.unchangedCodeShare >= 0 && entry.unchangedCodeShare < 1, "\(entry.tensor): \(entry.unchangedCodeShare)")
        }
        var plain: Merge.Report?
        try Self.merge(keepsQuantization: false) { plain = $0 }
        #expect(plain?.requantized == nil)
    }
}
