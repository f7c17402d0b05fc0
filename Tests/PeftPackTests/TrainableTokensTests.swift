import Foundation
import Testing
@testable import PeftPack

/// LoRA `trainable_token_indices` (PEFT's TrainableTokens): the saved
/// `<module>.token_adapter.trainable_tokens_delta` [n, dim] holds the new values of rows n of the
/// module's weight, which PEFT writes in with index_copy. tokens_llama trains rows of the (untied)
/// embed_tokens and lm_head with different indices; tokens_gpt2_tied trains rows of wte, whose
/// lm_head PEFT ties to it, so the head's rows change too. References are PEFT's reload and
/// merge_and_unload.
@Suite struct TrainableTokensTests {
    static let cases = ["tokens_llama", "tokens_gpt2_tied"]

    @Test func importTakesTheRowsFromTheConfig() throws {
        let (pack, _) = try ConfigFixtures.pack("tokens_llama")
        let adapter = try PackReader(path: pack).adapterDocument().adapters[0]
        let rows = adapter.modules.filter { $0.replacedRows != nil }
        #expect(rows.count == 2)
        #expect(rows.first { $0.target == "model.embed_tokens.weight" }?.replacedRows == [25, 142, 200])
        #expect(rows.first { $0.target == "lm_head.weight" }?.replacedRows == [5, 142])
        #expect(rows.allSatisfy { $0.wholeTensor?.sourceName?.hasSuffix(".token_adapter.trainable_tokens_delta") == true })
    }

    @Test func inspectListsTheReplacedRows() throws {
        let (pack, _) = try ConfigFixtures.pack("tokens_llama")
        let summary = Inspect.summary(try PackReader(path: pack).adapterDocument().adapters[0])
        #expect(summary.replacedRows == ["model.embed_tokens.weight": [25, 142, 200], "lm_head.weight": [5, 142]])
    }

    @Test(arguments: cases)
    func runtimeReproducesPeft(caseName: String) throws {
        let (pack, _) = try ConfigFixtures.pack(caseName)
        let comparison = try ConfigFixtures.verify(pack, against: caseName)
        #expect(comparison.passed, "max rel \(comparison.maxRelError)")
    }

    /// Negative control on the reference: without its rows the adapter is far from PEFT's output,
    /// so the rows (and, on GPT-2, the tied head's rows) are what the comparison above checks.
    @Test(arguments: cases)
    func theRowsMoveTheReference(caseName: String) throws {
        let (pack, _) = try ConfigFixtures.pack(caseName)
        let reader = try PackReader(path: pack)
        var adapter = try reader.adapterDocument().adapters[0]
        adapter.modules.removeAll { $0.replacedRows != nil }
        let (model, _) = try Verify.loadModel(ConfigFixtures.baseFolder(of: caseName))
        let adapters = try AdapterSet(adapters: [adapter], model: model, tensor: reader.readTensor)
        let comparison = try ReferenceFile(path: ConfigFixtures.reference(caseName))
            .compare(model, adapters: adapters, with: "output_adapter", label: caseName, tolerance: ConfigFixtures.tolerance)
        print("\(caseName) without its rows: max abs \(comparison.maxAbsError)")
        #expect(comparison.maxRelError > 1e-3)
    }

    /// Merged rows are the saved values exactly (a copy, no arithmetic), every other row of the
    /// embedding is the base's, and the merged model computes PEFT's output. On the tied GPT-2
    /// base the merge keeps the tie (no lm_head.weight written), which is what makes PEFT's tied
    /// head rows follow.
    @Test(arguments: cases)
    func mergeMatchesPeftsMerge(caseName: String) throws {
        let (pack, _) = try ConfigFixtures.pack(caseName)
        let base = try ConfigFixtures.baseFolder(of: caseName)
        let output = Fixtures.temporaryDirectory() + "/merged"
        _ = try Merge.run(base: base, inputs: [MergeInput(pack: pack, adapter: nil, weight: 1)], output: output, options: .init())
        let ours = try Checkpoint(path: output), peft = try Checkpoint(path: ConfigFixtures.path("\(caseName)/merged"))
        let embedding = caseName == "tokens_llama" ? "model.embed_tokens.weight" : "transformer.wte.weight"
        #expect(try ours.tensor(embedding).bytes == peft.tensor(embedding).bytes)
        if caseName == "tokens_llama" {
            #expect(try ours.tensor("lm_head.weight").bytes == peft.tensor("lm_head.weight").bytes)
        } else {
            #expect(ours.info("lm_head.weight") == nil)
            let config = try String(contentsOfFile: output + "/config.json", encoding: .utf8)
            #expect(!config.contains("\"tie_word_embeddings\": false"))
        }
        let report = try Verify.run(pack: pack, base: base, adapterNames: [], targets: [.merged(folder: output)],
                                    inputShape: (2, 16), seed: 3, tolerance: ConfigFixtures.tolerance)
        #expect(report.passed, "max rel \(report.comparisons[0].maxRelError)")
        let (merged, _) = try Verify.loadModel(output)
        let comparison = try ReferenceFile(path: ConfigFixtures.reference(caseName))
            .compare(merged, with: "output_adapter", label: caseName, tolerance: ConfigFixtures.tolerance)
        #expect(comparison.passed, "max rel \(comparison.maxRelError)")
    }

    /// PEFT export gives back the folder PEFT saved: the same config text and the same tensors,
    /// byte for byte, under the same keys.
    @Test(arguments: cases)
    func peftExportRoundTripsBitExact(caseName: String) throws {
        let (pack, _) = try ConfigFixtures.pack(caseName)
        let folder = Fixtures.temporaryDirectory() + "/exported"
        _ = try PackExport.run(pack: pack, output: folder, format: .peft, name: nil, force: false)
        let original = ConfigFixtures.path("\(caseName)/adapter")
        #expect(try String(contentsOfFile: folder + "/adapter_config.json", encoding: .utf8)
                == String(contentsOfFile: original + "/adapter_config.json", encoding: .utf8))
        let exported = try SafetensorsFile(path: folder + "/adapter_model.safetensors")
        let saved = try SafetensorsFile(path: original + "/adapter_model.safetensors")
        #expect(Set(exported.names) == Set(saved.names))
        for name in saved.names {
            #expect(try exported.tensor(name).bytes == saved.tensor(name).bytes, "\(name)")
            #expect(exported.info(name)?.shape == saved.info(name)?.shape)
        }
    }

    /// An adapter with no PEFT config of its own (what stack makes) exports its rows under PEFT's
    /// key, with a trainable_token_indices entry in the config made up for it.
    @Test func stackedRowsExportAsTrainableTokenIndices() throws {
        let (pack, _) = try ConfigFixtures.pack("tokens_llama")
        let reader = try PackReader(path: pack)
        var adapter = try reader.adapterDocument().adapters[0]
        adapter.source = nil
        let out = try PeftExporter.export(adapter, tensor: reader.readTensor)
        let config = try PeftConfig(text: out.configText, file: "fresh")
        let indices = try #require(config.trainableTokenIndices)
        #expect(indices.first { $0.module == "model.embed_tokens" }?.rows == [25, 142, 200])
        #expect(out.tensors.contains { $0.key == "base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta" })
    }
}
