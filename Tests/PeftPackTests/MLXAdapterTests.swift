import Foundation
import Testing
@testable import PeftPack

/// MLX adapter folders (mlx-lm 0.32). That mlx-lm loads the exports and reproduces PEFT's logits,
/// and that PEFT reproduces mlx-lm's own adapters, is checked by tests/python/check_mlx_adapters.py
/// and check_mlx_round_trip.py; here: the folder's layout (layer range, zero modules), the
/// refusals of what MLX cannot hold, and bad MLX folders refused at import.
@Suite struct MLXAdapterTests {
    static let base = Fixtures.path("models/llama-tiny")

    /// A copy of an mlx_adapters fixture folder with its config and tensors edited.
    static func editedFixture(_ name: String, config edit: (inout [String: Any]) -> Void = { _ in },
                              tensors change: (inout [String: HostTensor]) -> Void = { _ in }) throws -> String {
        let source = Fixtures.path("mlx_adapters/\(name)/adapter")
        let folder = Fixtures.temporaryDirectory() + "/\(name)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: source + "/adapter_config.json"))) as! [String: Any]
        edit(&config)
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: folder + "/adapter_config.json"))
        let file = try SafetensorsFile(path: source + "/adapters.safetensors")
        var tensors: [String: HostTensor] = [:]
        for name in file.names { tensors[name] = try file.tensor(name) }
        change(&tensors)
        try SafetensorsWriter.write(tensors, metadata: ["format": "mlx"], to: folder + "/adapters.safetensors")
        return folder
    }

    static func export(_ folder: String) throws -> (config: [String: Any], tensors: SafetensorsFile) {
        let pack = Fixtures.temporaryDirectory() + "/adapter.peftpack"
        _ = try PackImport.run(sources: [.init(path: folder, name: nil)], output: pack, baseFolder: base, level: 3)
        let out = Fixtures.temporaryDirectory() + "/mlx"
        _ = try PackExport.run(pack: pack, output: out, format: .mlx, name: nil, force: false)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/adapter_config.json"))) as! [String: Any]
        return (config, try SafetensorsFile(path: out + "/adapters.safetensors"))
    }

    @Test func anAdapterOnTheLastLayerOnlyKeepsNumLayersOneAndItsKeys() throws {
        let (config, tensors) = try Self.export(Fixtures.path("mlx_adapters/mlx_lora/adapter"))
        #expect(config["num_layers"] as? Int == 1)
        let parameters = config["lora_parameters"] as! [String: Any]
        #expect(parameters["keys"] as? [String] == ["mlp.down_proj", "self_attn.q_proj", "self_attn.v_proj"])
        #expect(parameters["rank"] as? Int == 4)
        #expect(parameters["scale"] as? Double == 2.5)
        #expect(config["model"] as? String == "models/llama-tiny", "the training arguments are kept")
        #expect(Set(tensors.names) == Set(try SafetensorsFile(path: Fixtures.path("mlx_adapters/mlx_lora/adapter/adapters.safetensors")).names))
    }

    @Test func anAdapterFromMLXExportsToMLXByDefault() throws {
        let pack = Fixtures.temporaryDirectory() + "/adapter.peftpack"
        _ = try PackImport.run(sources: [.init(path: Fixtures.path("mlx_adapters/mlx_lora/adapter"), name: nil)], output: pack, baseFolder: Self.base, level: 3)
        let report = try PackExport.run(pack: pack, output: Fixtures.temporaryDirectory() + "/out", format: nil, name: nil, force: false)
        #expect(report.format == "mlx")
        #expect(report.files.contains("adapters.safetensors"))
    }

    /// mlx-lm adapts every key in every layer of its range: a module the adapter leaves alone there
    /// gets zero factors, and for DoRA no `m` (mlx-lm then uses the base weight's norm: a factor of 1).
    @Test func modulesTheAdapterLacksInsideTheRangeGetZeroFactorsAndNoMagnitude() throws {
        let absent = "model.layers.1.self_attn.q_proj"
        let folder = try Self.editedFixture("mlx_dora", tensors: { tensors in
            for suffix in [".lora_a", ".lora_b", ".m"] { tensors[absent + suffix] = nil }
        })
        let (config, tensors) = try Self.export(folder)
        #expect(config["num_layers"] as? Int == 2)
        #expect(config["fine_tune_type"] as? String == "dora")
        let b = try tensors.tensor(absent + ".lora_b")
        #expect(b.shape == [4, 64])
        #expect(b.floats().allSatisfy { $0 == 0 })
        #expect(try tensors.tensor(absent + ".lora_a").floats().allSatisfy { $0 == 0 })
        #expect(tensors.info(absent + ".m") == nil)
        #expect(tensors.info("model.layers.0.self_attn.q_proj.m") != nil)
    }

    @Test(arguments: [("llama_ia3", "IA3"), ("llama_prefix", "prefix"), ("llama_prompt_tuning", "prompt"), ("llama_pfeiffer", "bottleneck"),
                      ("llama_lora_modules_to_save", "modules_to_save"), ("gpt2_dora", "gpt2")])
    func whatMLXCannotHoldIsRefusedAndNothingWritten(caseName: String, reason: String) throws {
        let pack = try PipelineVerifyTests.pack(caseName)
        let output = Fixtures.temporaryDirectory() + "/mlx"
        do {
            _ = try PackExport.run(pack: pack, output: output, format: .mlx, name: nil, force: false)
            Issue.record("\(caseName) exported")
        } catch let error as InputError {
            #expect(error.kind == .notExpressible, "\(error)")
            #expect(error.description.contains(reason), "\(error)")
        }
        #expect(!FileManager.default.fileExists(atPath: output))
    }

    /// mlx-lm's tied head is embed_tokens.as_linear, which carries an embedding LoRA: PEFT's LoRA on
    /// one side of a tied pair (without ensure_weight_tying) has no MLX form.
    @Test(arguments: [("qwen2_tied_lora_embed", "changes the embedding of a tied base and not its head"),
                      ("qwen2_tied_lora_head", "adapts the head of a tied base")])
    func aTiedPairChangedOnOneSideIsRefused(caseName: String, says: String) throws {
        let pack = Fixtures.temporaryDirectory() + "/\(caseName).peftpack"
        _ = try PackImport.run(sources: [.init(path: Fixtures.path("tied/cases/\(caseName)/adapter"), name: nil)], output: pack,
                               baseFolder: Fixtures.path("tied/models/qwen2-tied-tiny"), level: 3)
        let output = Fixtures.temporaryDirectory() + "/mlx"
        #expect { try PackExport.run(pack: pack, output: output, format: .mlx, name: nil, force: false) } throws: {
            ($0 as? InputError)?.kind == .notExpressible && "\($0)".contains(says)
        }
        #expect(!FileManager.default.fileExists(atPath: output))
    }

    /// On a tied base mlx-lm's embedding LoRA is also the head's: import gives the pack both
    /// modules, the head's A and B being lora_b and lora_a as saved; export folds them back.
    @Test func aTiedEmbeddingLoRAAlsoAdaptsTheHeadAndExportsAsOne() throws {
        let folder = Fixtures.path("mlx_adapters/mlx_lora_tied_embed/adapter")
        let base = try BaseModel(folder: Fixtures.path("tied/models/qwen2-tied-tiny"))
        let imported = try MLXImporter.importAdapter(folder: folder, name: nil, base: base)
        let head = try #require(imported.adapter.modules.first { $0.target == "lm_head" })
        #expect(head.lowRank?.layout == .linear)
        #expect(imported.adapter.modules.first { $0.target == "model.embed_tokens" }?.lowRank?.layout == .embedding)
        let saved = try SafetensorsFile(path: folder + "/adapters.safetensors")
        let tensors = Dictionary(uniqueKeysWithValues: imported.tensors.map { ($0.packName, $0) })
        #expect(try tensors[head.tensors[TensorRole.loraA]!]!.load().bytes == saved.tensor("model.embed_tokens.lora_b").bytes)
        #expect(try tensors[head.tensors[TensorRole.loraB]!]!.load().bytes == saved.tensor("model.embed_tokens.lora_a").bytes)

        let pack = Fixtures.temporaryDirectory() + "/tied.peftpack"
        _ = try PackImport.run(sources: [.init(path: folder, name: nil)], output: pack, baseFolder: base.folder, level: 3)
        let out = Fixtures.temporaryDirectory() + "/mlx"
        _ = try PackExport.run(pack: pack, output: out, format: .mlx, name: nil, force: false)
        let exported = try SafetensorsFile(path: out + "/adapters.safetensors")
        #expect(Set(exported.names) == Set(saved.names))
        for name in saved.names { #expect(try exported.tensor(name).bytes == saved.tensor(name).bytes, "\(name)") }
    }

    @Test func theEmbeddingAndAnUntiedHeadAreRootKeys() throws {
        let (config, tensors) = try Self.export(Fixtures.path("mlx_adapters/mlx_lora_embed_head/adapter"))
        let parameters = config["lora_parameters"] as! [String: Any]
        #expect(parameters["keys"] as? [String] == ["self_attn.q_proj", "lm_head", "model.embed_tokens"])
        #expect(try tensors.tensor("model.embed_tokens.lora_a").shape == [256, 4])
        #expect(try tensors.tensor("lm_head.lora_b").shape == [4, 256])
    }

    /// fine_tune_type full: every saved parameter replaces the base's, and export writes them back
    /// as they were, with lora_parameters null as mlx-lm's train_model saves it.
    @Test func aFullFineTuneImportsAsReplacementsAndExportsAsItWas() throws {
        let folder = Fixtures.path("mlx_adapters/mlx_full/adapter")
        let pack = Fixtures.temporaryDirectory() + "/full.peftpack"
        _ = try PackImport.run(sources: [.init(path: folder, name: nil)], output: pack, baseFolder: Self.base, level: 3)
        let document = try PackReader(path: pack).adapterDocument()
        let adapter = try #require(document.adapters.first)
        #expect(adapter.kind == .full)
        #expect(adapter.modules.count == 9)
        #expect(adapter.modules.allSatisfy { $0.wholeTensor?.effect == .replace })
        let out = Fixtures.temporaryDirectory() + "/mlx"
        _ = try PackExport.run(pack: pack, output: out, format: .mlx, name: nil, force: false)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/adapter_config.json"))) as! [String: Any]
        #expect(config["fine_tune_type"] as? String == "full")
        #expect(config["lora_parameters"] is NSNull)
        #expect(config["num_layers"] as? Int == 1)
        let saved = try SafetensorsFile(path: folder + "/adapters.safetensors")
        let exported = try SafetensorsFile(path: out + "/adapters.safetensors")
        #expect(Set(exported.names) == Set(saved.names))
        for name in saved.names { #expect(try exported.tensor(name).bytes == saved.tensor(name).bytes, "\(name)") }
    }

    @Test func aPackWithoutItsBaseCannotSayNumLayers() throws {
        let pack = Fixtures.temporaryDirectory() + "/lora.peftpack"
        _ = try PackImport.run(sources: [.init(path: Fixtures.path("cases/llama_lora/adapter"), name: nil)], output: pack, baseFolder: nil, level: 3)
        #expect { try PackExport.run(pack: pack, output: Fixtures.temporaryDirectory() + "/mlx", format: .mlx, name: nil, force: false) } throws: {
            ($0 as? InputError)?.kind == .baseNotRecorded
        }
    }

    /// The base a pack lacks can be given at export, or found through the PEFT config's
    /// base_model_name_or_path when that is a local folder; the folder must fit every module.
    @Test func aBaseGivenAtExportStandsInForTheRecord() throws {
        let pack = Fixtures.temporaryDirectory() + "/lora.peftpack"
        _ = try PackImport.run(sources: [.init(path: Fixtures.path("cases/llama_lora/adapter"), name: nil)], output: pack, baseFolder: nil, level: 3)
        let given = Fixtures.temporaryDirectory() + "/given"
        _ = try PackExport.run(pack: pack, output: given, format: .mlx, name: nil, force: false, baseFolder: Self.base)
        let (config, _) = try Self.export(Fixtures.path("cases/llama_lora/adapter"))
        let givenConfig = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: given + "/adapter_config.json"))) as! [String: Any]
        #expect(givenConfig["num_layers"] as? Int == config["num_layers"] as? Int)
        #expect { try PackExport.run(pack: pack, output: Fixtures.temporaryDirectory() + "/gpt2", format: .mlx, name: nil, force: false,
                                     baseFolder: Fixtures.path("models/gpt2-tiny")) } throws: { "\($0)".contains("does not have") }

        let folder = Fixtures.temporaryDirectory() + "/absolute"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        for file in ["adapter_model.safetensors"] {
            try FileManager.default.copyItem(atPath: Fixtures.path("cases/llama_lora/adapter/\(file)"), toPath: folder + "/" + file)
        }
        var peftConfig = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Fixtures.path("cases/llama_lora/adapter/adapter_config.json")))) as! [String: Any]
        peftConfig["base_model_name_or_path"] = Self.base
        try JSONSerialization.data(withJSONObject: peftConfig).write(to: URL(fileURLWithPath: folder + "/adapter_config.json"))
        let named = Fixtures.temporaryDirectory() + "/named.peftpack"
        _ = try PackImport.run(sources: [.init(path: folder, name: nil)], output: named, baseFolder: nil, level: 3)
        _ = try PackExport.run(pack: named, output: Fixtures.temporaryDirectory() + "/named", format: .mlx, name: nil, force: false)
    }

    static var badFolders: [(label: String, make: () throws -> String, says: String)] { [
        ("no lora_parameters", { try editedFixture("mlx_lora", config: { $0["lora_parameters"] = nil }) }, "no lora_parameters"),
        ("unknown fine_tune_type", { try editedFixture("mlx_lora", config: { $0["fine_tune_type"] = "qlora" }) }, "fine_tune_type \"qlora\""),
        ("num_layers beyond the model", { try editedFixture("mlx_lora", config: { $0["num_layers"] = 3 }) }, "num_layers 3 but the base"),
        ("a module before the last num_layers", { try editedFixture("mlx_dora", config: { $0["num_layers"] = 1 }) }, "before the last num_layers"),
        ("a module not among the keys", { try editedFixture("mlx_lora", config: { config in
            var parameters = config["lora_parameters"] as! [String: Any]
            parameters["keys"] = ["self_attn.q_proj"]
            config["lora_parameters"] = parameters
        }) }, "not among lora_parameters.keys"),
        ("shapes not matching the base", { try editedFixture("mlx_lora", tensors: { tensors in
            tensors["model.layers.1.self_attn.q_proj.lora_a"] = HostTensor(floats: [Float](repeating: 0.1, count: 32 * 4), shape: [32, 4], dtype: .f32)
        }) }, "implies a 64×32 linear weight"),
        ("rank other than the config's", { try editedFixture("mlx_lora", config: { config in
            var parameters = config["lora_parameters"] as! [String: Any]
            parameters["rank"] = 8
            config["lora_parameters"] = parameters
        }) }, "rank 8"),
        ("a full fine-tune's parameter the base lacks", { try editedFixture("mlx_full", tensors: { tensors in
            tensors["model.layers.1.self_attn.q_norm.weight"] = HostTensor(floats: [Float](repeating: 1, count: 16), shape: [16], dtype: .f32)
        }) }, "is not a parameter of the base"),
        ("a full fine-tune's parameter of another shape", { try editedFixture("mlx_full", tensors: { tensors in
            tensors["model.layers.1.input_layernorm.weight"] = HostTensor(floats: [Float](repeating: 1, count: 32), shape: [32], dtype: .f32)
        }) }, "has shape [32] but the base's"),
        ("a head LoRA on a tied base", { try editedFixture("mlx_lora_tied_embed", config: { config in
            var parameters = config["lora_parameters"] as! [String: Any]
            parameters["keys"] = ["model.embed_tokens", "self_attn.v_proj", "lm_head"]
            config["lora_parameters"] = parameters
        }, tensors: { tensors in
            tensors["lm_head.lora_a"] = HostTensor(floats: [Float](repeating: 0.1, count: 64 * 4), shape: [64, 4], dtype: .f32)
            tensors["lm_head.lora_b"] = HostTensor(floats: [Float](repeating: 0.1, count: 4 * 256), shape: [4, 256], dtype: .f32)
        }) }, "ties it to model.embed_tokens.weight"),
    ] }

    @Test(arguments: 0..<10)
    func badMLXFoldersAreOneLineExitTwoAndWriteNothing(index: Int) throws {
        let bad = Self.badFolders[index]
        let folder = try bad.make()
        let output = Fixtures.temporaryDirectory() + "/out.peftpack"
        let base = bad.label.contains("tied") ? Fixtures.path("tied/models/qwen2-tied-tiny") : Self.base
        let result = try CLI.run(["import", folder, "--base", base, "-o", output])
        #expect(result.status == 2, "\(bad.label): \(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1, "\(bad.label): \(result.stderr)")
        #expect(result.stderr.contains(bad.says), "\(bad.label): \(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: output), "\(bad.label)")
    }
}
