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
    static func merge(keepsQuantization: Bool, dtype: DType? = nil, promotion: Promotion? = nil,
                      report: ((Merge.Report) -> Void)? = nil) throws -> String {
        let directory = Fixtures.temporaryDirectory()
        let pack = directory + "/qlora.peftpack"
        _ = try PackImport.run(sources: [.init(path: BitsandbytesTests.folder + "/llama-tiny-nf4-qlora/adapter", name: "qlora")],
                               output: pack, baseFolder: nil, level: 3)
        let output = directory + "/merged"
        let result = try Merge.run(base: base, inputs: [MergeInput(pack: pack, adapter: nil, weight: 1)], output: output,
                                   options: .init(dtype: dtype, keepsQuantization: keepsQuantization, promotion: promotion))
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

    /// Values, loading by transformers and the config entry are checked against the real stack by
    /// tests/python/check_quantized_bases.py; here the stored layout.
    @Test func promotedWeightsArePlainTensorsWithoutCompanionsNamedInTheConfig() throws {
        var report: Merge.Report?
        let output = try Self.merge(keepsQuantization: true, promotion: Promotion(precision: .f32, allMerged: true)) { report = $0 }
        let merged = try Checkpoint(storedAt: output), base = try Checkpoint(path: Self.base)
        let promoted = try #require(report?.requantized).map(\.tensor)
        #expect(try #require(report?.requantized).allSatisfy { $0.promotedTo == "F32" })
        for name in promoted {
            #expect(merged.info(name)?.dtype == .f32 && merged.info(name)?.shape == base.info(name)?.shape, "\(name)")
            #expect(!merged.storedNames.contains { $0.hasPrefix(name + ".") }, "\(name) kept companions")
        }
        #expect(Set(merged.storedNames) == Set(base.stored.storedNames.filter { name in !promoted.contains { name.hasPrefix($0 + ".") } }))
        let config = try StrictJSON.parse(Array(try String(contentsOfFile: output + "/config.json", encoding: .utf8).utf8))
        let listed = config["quantization_config"]?["llm_int8_skip_modules"]?.arrayValue?.compactMap(\.stringValue)
        #expect(listed == ["lm_head"] + promoted.map { String($0.dropLast(".weight".count)) })
    }

    @Test func promotionToAGGMLTypeIsRefused() throws {
        do {
            try Self.merge(keepsQuantization: true, promotion: Promotion(precision: .q8_0, allMerged: true))
            Issue.record("a q8_0 promotion on a bitsandbytes base was written")
        } catch let error as InputError {
            #expect(error.description.contains("bf16, fp16 or fp32, not q8_0"), "\(error)")
        }
    }

    /// The fixture's unquantized weights are F32: transformers would load a BF16 Linear among them as is.
    @Test func promotionToAnotherDTypeThanTheBasesIsRefused() throws {
        do {
            try Self.merge(keepsQuantization: true, promotion: Promotion(precision: .bf16, allMerged: true))
            Issue.record("a BF16 promotion on an F32 base was written")
        } catch let error as InputError {
            #expect(error.description.contains("F32"))
        }
    }
}

/// config.json's llm_int8_skip_modules as a merge with promoted modules rewrites it.
@Suite struct SkippedModulesConfigTests {
    static let config = """
        {
          "model_type": "llama",
          "quantization_config": {
            "bnb_4bit_quant_type": "nf4",
            "llm_int8_skip_modules": null,
            "quant_method": "bitsandbytes"
          },
          "vocab_size": 320
        }
        """

    @Test func aNullListIsReplacedInTransformersLayoutAndTheRestKept() throws {
        let text = SkippedModulesConfig.setting(["lm_head", "model.layers.0.mlp.down_proj"], in: Self.config)
        #expect(text == Self.config.replacingOccurrences(of: "\"llm_int8_skip_modules\": null", with: """
            "llm_int8_skip_modules": [
                  "lm_head",
                  "model.layers.0.mlp.down_proj"
                ]
            """))
        #expect(try SkippedModulesConfig.listed(in: text, file: "config.json") == ["lm_head", "model.layers.0.mlp.down_proj"])
        #expect(try SkippedModulesConfig.listed(in: Self.config, file: "config.json") == nil)
    }

    @Test func anAbsentListIsAddedAsTheFirstMember() throws {
        let without = Self.config.replacingOccurrences(of: "    \"llm_int8_skip_modules\": null,\n", with: "")
        let text = SkippedModulesConfig.setting(["lm_head"], in: without)
        #expect(try SkippedModulesConfig.listed(in: text, file: "config.json") == ["lm_head"])
        #expect(text.contains("\"quantization_config\": {\n    \"llm_int8_skip_modules\": [\n      \"lm_head\"\n    ],\n    \"bnb_4bit_quant_type\""))
    }

    /// transformers 5 also skips a module whose full name ends with an entry.
    @Test func anEntryThatWouldAlsoSkipAQuantizedModuleIsRefused() throws {
        #expect(throws: InputError.self) {
            try SkippedModulesConfig.check(["layers.0.mlp.down_proj"], quantizedModules: ["model.layers.0.mlp.down_proj"], file: "config.json")
        }
        try SkippedModulesConfig.check(["model.layers.1.mlp.down_proj"], quantizedModules: ["model.layers.11.mlp.down_proj"], file: "config.json")
    }
}
