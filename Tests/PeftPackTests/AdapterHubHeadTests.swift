import Foundation
import Testing
@testable import PeftPack

/// An AdapterHub folder saved from a model with a prediction head (BertForSequenceClassification +
/// adapters.init + save_adapter) holds the head beside the adapter, and adapters 1.3's default
/// `load_adapter(folder)` loads it over the model's own head. A pack does not carry heads yet, so
/// import refuses such a folder, naming the files, unless asked to import the adapter alone. The
/// file names are adapters 1.3's (utils.py HEAD_CONFIG_NAME, HEAD_WEIGHTS_NAME,
/// SAFE_HEAD_WEIGHTS_NAME); refusal goes by name, so the head files' content does not matter here.
@Suite struct AdapterHubHeadTests {
    static let adapter = Fixtures.path("cases/bert_pfeiffer/adapter_bin")

    static func folderWithHead(_ files: [String]) throws -> String {
        let folder = Fixtures.temporaryDirectory() + "/pfeiffer"
        try FileManager.default.copyItem(atPath: adapter, toPath: folder)
        for file in files { try Data("head".utf8).write(to: URL(fileURLWithPath: folder + "/" + file)) }
        return folder
    }

    @Test(arguments: [["head_config.json", "pytorch_model_head.bin"], ["head_config.json", "model_head.safetensors"], ["pytorch_model_head.bin"]])
    func importRefusesAFolderWithAHeadNamingItsFiles(files: [String]) throws {
        let folder = try Self.folderWithHead(files)
        let output = Fixtures.temporaryDirectory() + "/out.peftpack"
        let result = try CLI.run(["import", folder, "-o", output])
        #expect(result.status == 2)
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        #expect(result.stderr.contains("holds a prediction head (\(files.joined(separator: ", ")))"), "\(result.stderr)")
        #expect(result.stderr.contains("--without-head"))
        #expect(!FileManager.default.fileExists(atPath: output))
    }

    /// --without-head imports the adapter exactly as from a folder without the head, and lists
    /// what it left out (text and --json).
    @Test func withoutHeadImportsTheAdapterAloneAndListsTheHeadFiles() throws {
        let folder = try Self.folderWithHead(["head_config.json", "pytorch_model_head.bin"])
        let output = Fixtures.temporaryDirectory() + "/out.peftpack"
        let report = try PackImport.run(sources: [.init(path: folder, name: nil)], output: output, baseFolder: nil, level: 3, withoutHead: true)
        #expect(report.leftOutHeadFiles == [folder + "/head_config.json", folder + "/pytorch_model_head.bin"])
        let plain = Fixtures.temporaryDirectory() + "/plain.peftpack"
        _ = try PackImport.run(sources: [.init(path: Self.adapter, name: nil)], output: plain, baseFolder: nil, level: 3)
        let ours = try PackReader(path: output), theirs = try PackReader(path: plain)
        #expect(ours.tensors.map(\.name) == theirs.tensors.map(\.name))
        for entry in theirs.tensors { #expect(try ours.readTensor(entry.name).bytes == theirs.readTensor(entry.name).bytes) }

        let cli = try CLI.run(["import", folder, "-o", Fixtures.temporaryDirectory() + "/cli.peftpack", "--without-head", "--json"])
        #expect(cli.status == 0, "\(cli.stderr)")
        #expect(cli.stdout.contains("\"leftOutHeadFiles\"") && cli.stdout.contains("pytorch_model_head.bin"))
        let text = try CLI.run(["import", folder, "-o", Fixtures.temporaryDirectory() + "/cli.peftpack", "--without-head"])
        #expect(text.stderr.contains("left out \(folder)/head_config.json"), "\(text.stderr)")
    }

    /// adapters 1.3 saves a causal LM's own lm_head with every adapter (fixtures/data/cases/
    /// llama_pfeiffer, whose lm_head equals llama-tiny's byte for byte): with the base given it is
    /// recognised as the base's and left out with a note. One element changed makes it a head of
    /// its own, refused naming the tensor.
    @Test func aHeadEqualToTheBasesIsAcceptedWithTheBaseAndAChangedOneIsNot() throws {
        let base = Fixtures.path("models/llama-tiny")
        for variant in ["adapter_bin", "adapter_safetensors"] {
            let folder = Fixtures.path("cases/llama_pfeiffer/\(variant)")
            let report = try PackImport.run(sources: [.init(path: folder, name: nil)], output: Fixtures.temporaryDirectory() + "/p.peftpack",
                                            baseFolder: base, level: 3)
            #expect(report.warnings.contains { $0.contains("is the base's own; left out") }, "\(report.warnings)")
            #expect(report.leftOutHeadFiles.count == 2)
        }
        let changed = Fixtures.temporaryDirectory() + "/pfeiffer"
        try FileManager.default.copyItem(atPath: Fixtures.path("cases/llama_pfeiffer/adapter_safetensors"), toPath: changed)
        var head = try SafetensorsFile(path: changed + "/model_head.safetensors").tensor("lm_head.weight")
        var values = head.floats()
        values[7] += 0.25
        head = HostTensor(floats: values, shape: head.shape, dtype: .f32)
        try SafetensorsWriter.write(["lm_head.weight": head], to: changed + "/model_head.safetensors")
        let output = Fixtures.temporaryDirectory() + "/p.peftpack"
        let result = try CLI.run(["import", changed, "--base", base, "-o", output])
        #expect(result.status == 2)
        #expect(result.stderr.contains("whose lm_head.weight is not the base's") && result.stderr.contains("--without-head"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: output))
    }
}
