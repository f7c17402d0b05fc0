import Foundation

/// What a path given to `import` or `inspect` holds, decided from its files, not its name.
public enum AdapterSourceKind: String, Encodable, Sendable {
    case pack = "peftpack"
    case peft
    case adapterhub
    case safetensors
    case gguf
}

public enum AdapterSourceFolder {
    public static func detect(_ path: String) throws -> AdapterSourceKind {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else {
            throw AdapterFormatError(file: path, problem: "no such file or folder")
        }
        if !isFolder.boolValue {
            let handle = FileHandle(forReadingAtPath: path)
            let head = handle.flatMap { try? $0.read(upToCount: 8) } ?? Data()
            try? handle?.close()
            if [UInt8](head) == PackFormat.magic { return .pack }
            if [UInt8](head.prefix(4)) == GGUF.magic { return .gguf }
            if path.hasSuffix(".safetensors") { return .safetensors }
            throw AdapterFormatError(file: path, problem: "is neither a .peftpack, a GGUF adapter nor a .safetensors file")
        }
        let configPath = (path as NSString).appendingPathComponent("adapter_config.json")
        if let text = try? String(contentsOfFile: configPath, encoding: .utf8) {
            let json: StrictJSON
            do {
                json = try StrictJSON.parse(Array(text.utf8))
            } catch {
                throw AdapterFormatError(file: configPath, problem: "is not valid JSON: \(error)")
            }
            if json["peft_type"] != nil { return .peft }
            if json["config"] != nil && json["name"] != nil { return .adapterhub }
            throw AdapterFormatError(file: configPath, problem: "is neither a PEFT config (no peft_type) nor an AdapterHub config (no config/name)")
        }
        let fileManager = FileManager.default
        if fileManager.fileExists(atPath: (path as NSString).appendingPathComponent(Checkpoint.singleFileName))
            || fileManager.fileExists(atPath: (path as NSString).appendingPathComponent(Checkpoint.indexFileName)) {
            return .safetensors
        }
        throw AdapterFormatError(file: path, problem: "holds no adapter_config.json, model.safetensors or model.safetensors.index.json")
    }

    /// Reads a PEFT or AdapterHub folder into a pack adapter. `dropUnloaded`: leave out saved
    /// tensors PEFT would not load instead of refusing them.
    public static func importFolder(_ path: String, kind: AdapterSourceKind, name: String?, dropUnloaded: Bool = false) throws -> ImportedAdapter {
        let configPath = (path as NSString).appendingPathComponent("adapter_config.json")
        let configText = try String(contentsOfFile: configPath, encoding: .utf8)
        let candidates = kind == .peft
            ? ["adapter_model.safetensors", "adapter_model.bin"]
            : ["adapter.safetensors", "pytorch_adapter.bin"]
        guard let weightsName = candidates.first(where: { FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent($0)) }) else {
            throw AdapterFormatError(file: path, problem: "has no \(candidates.joined(separator: " or "))")
        }
        let weightsPath = (path as NSString).appendingPathComponent(weightsName)
        let tensors: TensorSource = weightsName.hasSuffix(".safetensors")
            ? try SafetensorsFile(path: weightsPath)
            : DictionaryTensorSource(try TorchCheckpointReader.read(path: weightsPath), origin: weightsPath)
        switch kind {
        case .peft:
            return try PeftImporter.importAdapter(name: name ?? "default", configText: configText, tensors: tensors,
                                                  configFile: configPath, weightsFile: weightsPath, dropUnloaded: dropUnloaded)
        default:
            return try AdapterHubFormat.importAdapter(name: name, configText: configText, tensors: tensors,
                                                      configFile: configPath, weightsFile: weightsPath)
        }
    }
}
