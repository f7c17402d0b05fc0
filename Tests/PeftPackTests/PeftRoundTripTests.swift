import Foundation
import Testing
@testable import PeftPack

/// PEFT adapters as PEFT saved them survive import → export unchanged: same keys, same bytes,
/// same config text.
@Suite struct PeftRoundTripTests {
    static let cases: [String] = {
        let folder = Fixtures.data.appendingPathComponent("cases").path
        return (try! FileManager.default.contentsOfDirectory(atPath: folder)).sorted().filter {
            FileManager.default.fileExists(atPath: "\(folder)/\($0)/adapter/adapter_config.json")
        }
    }()

    static func importCase(_ name: String) throws -> (ImportedAdapter, SafetensorsFile, String) {
        let folder = Fixtures.path("cases/\(name)/adapter")
        let weights = try SafetensorsFile(path: folder + "/adapter_model.safetensors")
        let configText = try String(contentsOfFile: folder + "/adapter_config.json", encoding: .utf8)
        let imported = try PeftImporter.importAdapter(name: "default", configText: configText, tensors: weights,
                                                      configFile: folder + "/adapter_config.json", weightsFile: weights.path)
        return (imported, weights, configText)
    }

    @Test func everyPeftFixtureIsCovered() {
        #expect(Self.cases.count == 15)
    }

    @Test(arguments: cases)
    func importThenExportReproducesEveryTensor(caseName: String) throws {
        let (imported, weights, configText) = try Self.importCase(caseName)
        var packTensors: [String: HostTensor] = [:]
        for tensor in imported.tensors { packTensors[tensor.packName] = try tensor.load() }
        let exported = try PeftExporter.export(imported.adapter) { packTensors[$0]! }
        #expect(exported.configText == configText)
        #expect(Set(exported.tensors.map(\.key)) == Set(weights.names))
        for (key, tensor) in exported.tensors {
            let original = try weights.tensor(key)
            #expect(tensor.shape == original.shape, "\(key)")
            #expect(tensor.dtype == original.dtype, "\(key)")
            #expect(tensor.bytes == original.bytes, "\(key)")
        }
    }

    /// rsLoRA scales by alpha/√r; rank_pattern and alpha_pattern override r and alpha for the
    /// modules whose name ends with the key (first match wins), as PEFT's get_pattern_key does.
    @Test func rsloraPatternsResolveToPeftScales() throws {
        let (imported, _, _) = try Self.importCase("llama_rslora_patterns")
        func module(_ target: String) -> AdapterModule { imported.adapter.modules.first { $0.target == target }! }
        let q = module("model.layers.0.self_attn.q_proj")
        #expect(q.lowRank == LowRankModule(layout: .linear, rank: 4, scale: 16 / 2.0))
        let v = module("model.layers.1.self_attn.v_proj")
        #expect(v.lowRank == LowRankModule(layout: .linear, rank: 8, scale: 32 / 8.0.squareRoot()))
        let down1 = module("model.layers.1.mlp.down_proj")
        #expect(down1.lowRank == LowRankModule(layout: .linear, rank: 12, scale: 16 / 12.0.squareRoot()))
        let down0 = module("model.layers.0.mlp.down_proj")
        #expect(down0.lowRank == LowRankModule(layout: .linear, rank: 8, scale: 16 / 8.0.squareRoot()))
    }

    @Test func layoutsFollowFanInFanOutAndEmbeddings() throws {
        let (gpt2, _, _) = try Self.importCase("gpt2_lora_fan_in_fan_out")
        #expect(gpt2.adapter.modules.allSatisfy { $0.layout == .conv1d })
        let (embedding, _, _) = try Self.importCase("llama_lora_embedding")
        #expect(embedding.adapter.modules.first { $0.target == "model.embed_tokens" }?.layout == .embedding)
        #expect(embedding.adapter.modules.contains { $0.wholeTensor?.effect == .replace && $0.target == "model.embed_tokens.weight" })
    }

    @Test func prefixIsSplitPerLayerIntoKeysAndValues() throws {
        let (imported, weights, _) = try Self.importCase("llama_prefix")
        #expect(imported.adapter.settings.numKeyValueHeads == 2)
        #expect(imported.adapter.settings.headDim == 16)
        let whole = try weights.tensor("prompt_embeddings")
        let values1 = try imported.tensors.first { $0.packName == "default/layers.1/values" }!.load()
        #expect(values1.shape == [5, 2, 16])
        // Row 0 of layer 1's values is block 3 of row 0 of the flat tensor (32 floats = 128 bytes).
        #expect(Array(values1.bytes[0..<128]) == Array(whole.bytes[(3 * 128)..<(4 * 128)]))
    }

    @Test func ia3SidesFollowFeedforwardModules() throws {
        let (imported, _, _) = try Self.importCase("llama_ia3")
        for module in imported.adapter.modules {
            #expect(module.ia3?.side == (module.target.hasSuffix("down_proj") ? .input : .output))
        }
    }

    @Test func freshConfigGivesEveryModuleItsScale() throws {
        let (imported, _, _) = try Self.importCase("llama_rslora_patterns")
        var adapter = imported.adapter
        adapter.source = nil
        let text = try PeftExporter.export(adapter) { _ in HostTensor(dtype: .f32, shape: [0], bytes: []) }.configText
        let config = try PeftConfig(text: text, file: "fresh")
        for module in adapter.modules {
            let (rank, scale) = config.loraRankAndScale(moduleName: module.target)
            let settings = try #require(module.lowRank)
            #expect(rank == settings.rank)
            #expect(abs(scale - settings.scale) <= 1e-12 * settings.scale, "\(module.target)")
        }
    }

    @Test func missingFactorIsRefusedNamingTheModule() throws {
        let folder = Fixtures.path("cases/llama_lora/adapter")
        let weights = try SafetensorsFile(path: folder + "/adapter_model.safetensors")
        let kept = try weights.names.filter { $0 != "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight" }.map { ($0, try weights.tensor($0)) }
        let configText = try String(contentsOfFile: folder + "/adapter_config.json", encoding: .utf8)
        #expect {
            _ = try PeftImporter.importAdapter(name: "default", configText: configText, tensors: DictionaryTensorSource(kept, origin: "adapter_model.safetensors"),
                                               configFile: "adapter_config.json", weightsFile: "adapter_model.safetensors")
        } throws: { error in
            "\(error)".contains("model.layers.0.self_attn.q_proj has no lora_B")
        }
    }

    @Test func configContradictingShapesIsRefused() throws {
        let folder = Fixtures.path("cases/llama_lora/adapter")
        let weights = try SafetensorsFile(path: folder + "/adapter_model.safetensors")
        let configText = try String(contentsOfFile: folder + "/adapter_config.json", encoding: .utf8)
            .replacingOccurrences(of: "\"r\": 8", with: "\"r\": 4")
        #expect {
            _ = try PeftImporter.importAdapter(name: "default", configText: configText, tensors: weights, configFile: "adapter_config.json", weightsFile: weights.path)
        } throws: { error in
            "\(error)".contains("adapter_config.json gives") && "\(error)".contains("rank 4 but lora_A is [8, ")
        }
    }

    @Test func extraTensorInPromptAdapterIsRefused() throws {
        let folder = Fixtures.path("cases/llama_prompt_tuning/adapter")
        let weights = try SafetensorsFile(path: folder + "/adapter_model.safetensors")
        let entries = [("prompt_embeddings", try weights.tensor("prompt_embeddings")),
                       ("stray", HostTensor(dtype: .f32, shape: [1], bytes: [0, 0, 0, 0]))]
        let configText = try String(contentsOfFile: folder + "/adapter_config.json", encoding: .utf8)
        #expect {
            _ = try PeftImporter.importAdapter(name: "default", configText: configText, tensors: DictionaryTensorSource(entries, origin: "x"), configFile: "c", weightsFile: "adapter_model.safetensors")
        } throws: { error in
            "\(error)".contains("tensor stray")
        }
    }
}
