import Foundation
import Testing
@testable import PeftPack

/// A fixture folder of adapters PEFT trained (`<root>/<case>/adapter`, `<case>.ref.safetensors`,
/// `merged/`), as the kind suites read it: each case's base by its name's model prefix.
struct PeftKindCases {
    let root: String

    func folder(_ caseName: String) -> String { Fixtures.path("\(root)/\(caseName)") }

    func base(_ caseName: String) -> String {
        Fixtures.path(caseName.hasPrefix("bert") ? "models/bert-tiny" : caseName.hasPrefix("gpt2") ? "models/gpt2-tiny" : "models/llama-tiny")
    }

    func pack(_ caseName: String, adapter: String? = nil) throws -> String {
        let output = Fixtures.temporaryDirectory() + "/\(caseName).peftpack"
        _ = try PackImport.run(sources: [.init(path: adapter ?? folder(caseName) + "/adapter", name: nil)], output: output,
                               baseFolder: base(caseName), level: 3)
        return output
    }

    func verify(_ pack: String, _ caseName: String) throws -> Verify.Report {
        try Verify.run(pack: pack, base: base(caseName), adapterNames: [],
                       targets: [.reference(path: folder(caseName) + "/\(caseName).ref.safetensors", key: nil)],
                       inputShape: (2, 7), seed: 0, tolerance: PipelineVerifyTests.tolerance)
    }

    /// Import then export gives PEFT's adapter_config.json and every non-empty tensor back byte
    /// for byte (PEFT saves a module AdaLoRA pruned to rank 0 as empty tensors; a pack keeps none).
    func expectExportGivesPeftsFolderBack(_ caseName: String) throws {
        let out = Fixtures.temporaryDirectory() + "/peft"
        _ = try PackExport.run(pack: try pack(caseName), output: out, format: .peft, name: nil, force: false)
        let source = folder(caseName) + "/adapter"
        #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/adapter_config.json")) == Data(contentsOf: URL(fileURLWithPath: source + "/adapter_config.json")))
        let original = try SafetensorsFile(path: source + "/adapter_model.safetensors")
        let exported = try SafetensorsFile(path: out + "/adapter_model.safetensors")
        let nonEmpty = try original.names.filter { try original.tensor($0).elementCount > 0 }
        #expect(Set(exported.names) == Set(nonEmpty))
        for name in nonEmpty {
            let a = try original.tensor(name), b = try exported.tensor(name)
            #expect(a.shape == b.shape && a.dtype == b.dtype && a.bytes == b.bytes, "\(caseName): \(name)")
        }
    }

    /// Against PEFT's merge_and_unload (fp32): PEFT rounds its fp32 ΔW and the fp32 sum, ours
    /// rounds once from fp64, so elements may differ by a few fp32 ulps of each tensor's largest
    /// value (8 allowed). Returns how many of PEFT's tensors were compared.
    @discardableResult
    func expectMergeMatchesPeft(_ caseName: String) throws -> (compared: Int, total: Int) {
        let output = Fixtures.temporaryDirectory() + "/merged"
        _ = try Merge.run(base: base(caseName), inputs: [MergeInput(pack: try pack(caseName), adapter: nil, weight: 1)], output: output,
                          options: .init(dtype: nil, baseCheck: .content))
        let ours = try Checkpoint(path: output), peft = try Checkpoint(path: folder(caseName) + "/merged")
        var compared = 0
        for name in peft.names {
            guard let mine = try? ours.tensor(name) else { continue }
            let a = mine.floats(), b = try peft.tensor(name).floats()
            let scale = b.map { abs($0) }.max() ?? 0
            let worst = zip(a, b).map { abs($0 - $1) }.max() ?? 0
            #expect(worst <= 8 * scale.ulp, "\(caseName): \(name) differs by \(worst)")
            compared += 1
        }
        return (compared, peft.names.count)
    }

    /// A copy of a PEFT adapter folder with its config and tensors edited.
    static func editedFolder(_ source: String, config edit: (inout [String: Any]) -> Void = { _ in },
                             tensors change: (inout [String: HostTensor]) -> Void = { _ in }) throws -> String {
        let folder = Fixtures.temporaryDirectory() + "/edited"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: source + "/adapter_config.json"))) as! [String: Any]
        edit(&config)
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: folder + "/adapter_config.json"))
        let file = try SafetensorsFile(path: source + "/adapter_model.safetensors")
        var tensors: [String: HostTensor] = [:]
        for name in file.names { tensors[name] = try file.tensor(name) }
        change(&tensors)
        try SafetensorsWriter.write(tensors, metadata: ["format": "pt"], to: folder + "/adapter_model.safetensors")
        return folder
    }
}
