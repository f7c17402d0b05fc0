import Foundation
@testable import PeftPack

/// A fixture case's adapter as a user gets it: its PEFT or AdapterHub folder imported by
/// `PackImport` (the real importers, checked against the case's base) into a pack, read back.
/// Tests edit `adapters` and `tensors` to build the variants they need.
struct ImportedCase {
    /// The pack the import wrote.
    let pack: String
    var adapters: [Adapter]
    var tensors: [String: HostTensor]

    struct MissingTensor: Error, CustomStringConvertible {
        let name: String
        var description: String { "no tensor \(name)" }
    }

    func tensor(_ name: String) throws -> HostTensor {
        guard let tensor = tensors[name] else { throw MissingTensor(name: name) }
        return tensor
    }

    /// The tensor one module of the first adapter holds in `role`.
    func tensorName(target: String, role: String) -> String? {
        adapters[0].modules.first { $0.target == target }?.tensors[role]
    }

    /// Imports `cases/<name>/adapter` (PEFT) or `cases/<name>/adapter_safetensors` (AdapterHub),
    /// naming the adapter after the case.
    static func load(case name: String) throws -> ImportedCase {
        let directory = RuntimeFixtures.url("cases/\(name)")
        let peft = directory.appendingPathComponent("adapter")
        let folder = FileManager.default.fileExists(atPath: peft.appendingPathComponent("adapter_config.json").path)
            ? peft : directory.appendingPathComponent("adapter_safetensors")
        let base = try RuntimeFixtures.reference(case: name).metadata["base"] ?? ""
        let pack = Fixtures.temporaryDirectory() + "/\(name).peftpack"
        _ = try PackImport.run(sources: [.init(path: folder.path, name: name)], output: pack,
                               baseFolder: RuntimeFixtures.url(base).path, level: 3)
        let reader = try PackReader(path: pack)
        var tensors: [String: HostTensor] = [:]
        for entry in reader.tensors { tensors[entry.name] = try reader.readTensor(entry.name) }
        return ImportedCase(pack: pack, adapters: try reader.adapterDocument().adapters, tensors: tensors)
    }
}
