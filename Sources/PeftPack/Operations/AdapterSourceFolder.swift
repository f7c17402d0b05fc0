import Foundation

/// What a path given to `import` or `inspect` holds, decided from its files, not its name.
public enum AdapterSourceKind: String, Encodable, Sendable {
    case pack = "peftpack"
    case peft
    case adapterhub
    case safetensors
    case gguf
    case mlx
}

public enum AdapterSourceFolder {
    public static func detect(_ path: String) throws -> AdapterSourceKind {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else {
            throw InputError(file: path, problem: "no such file or folder")
        }
        if !isFolder.boolValue {
            let handle = FileHandle(forReadingAtPath: path)
            let head = handle.flatMap { try? $0.read(upToCount: 8) } ?? Data()
            try? handle?.close()
            if [UInt8](head) == PackFormat.magic { return .pack }
            if [UInt8](head.prefix(4)) == GGUF.magic { return .gguf }
            if path.hasSuffix(".safetensors") { return .safetensors }
            throw InputError(file: path, problem: "is neither a .peftpack, a GGUF adapter nor a .safetensors file")
        }
        let configPath = (path as NSString).appendingPathComponent("adapter_config.json")
        if let text = try? String(contentsOfFile: configPath, encoding: .utf8) {
            let json: StrictJSON
            do {
                json = try StrictJSON.parse(Array(text.utf8))
            } catch {
                throw InputError(file: configPath, problem: "is not valid JSON: \(error)")
            }
            if json["peft_type"] != nil { return .peft }
            if json["config"] != nil && json["name"] != nil { return .adapterhub }
            if MLXAdapterFormat.isAdapterConfig(json) { return .mlx }
            throw InputError(file: configPath, problem: "is neither a PEFT config (no peft_type), an AdapterHub config (no config/name) nor an MLX one (no fine_tune_type/lora_parameters)")
        }
        if !peftSave(path).subfolders.isEmpty { return .peft }
        let fileManager = FileManager.default
        if fileManager.fileExists(atPath: (path as NSString).appendingPathComponent(Checkpoint.singleFileName))
            || fileManager.fileExists(atPath: (path as NSString).appendingPathComponent(Checkpoint.indexFileName)) {
            return .safetensors
        }
        throw InputError(file: path, problem: "holds no adapter_config.json, model.safetensors or model.safetensors.index.json")
    }

    /// The adapters of a PEFT save folder. `save_pretrained` writes the adapter named "default" at
    /// the root and every other one in a sub-folder named after it (peft_model.py:
    /// `os.path.join(save_directory, adapter_name) if adapter_name != "default"`), so a model
    /// given several adapters with `add_adapter` saves them all under one folder. Sub-folders
    /// whose adapter_config.json is not a PEFT adapter saved there (a Trainer `checkpoint-N`,
    /// recognised by its trainer_state.json, or another tool's adapter) are left out, with why.
    public static func peftSave(_ path: String) -> (root: Bool, subfolders: [String], leftOut: [(folder: String, reason: String)]) {
        let fileManager = FileManager.default
        func config(_ folder: String) -> StrictJSON? {
            let file = (folder as NSString).appendingPathComponent("adapter_config.json")
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
            return (try? StrictJSON.parse(Array(text.utf8))) ?? .null
        }
        let root = config(path)?["peft_type"] != nil
        var subfolders: [String] = []
        var leftOut: [(String, String)] = []
        for name in ((try? fileManager.contentsOfDirectory(atPath: path)) ?? []).sorted() where !name.hasPrefix(".") {
            let folder = (path as NSString).appendingPathComponent(name)
            var isFolder: ObjCBool = false
            guard fileManager.fileExists(atPath: folder, isDirectory: &isFolder), isFolder.boolValue, let json = config(folder) else { continue }
            if fileManager.fileExists(atPath: (folder as NSString).appendingPathComponent("trainer_state.json")) {
                leftOut.append((folder, "a Trainer checkpoint, not an adapter PEFT saved beside the root one; import it by its own path"))
            } else if json["peft_type"] == nil {
                leftOut.append((folder, "its adapter_config.json is not a PEFT config"))
            } else {
                subfolders.append(name)
            }
        }
        return (root, subfolders, leftOut)
    }

    /// The prediction-head files AdapterHub's `save_adapter` writes beside an adapter of a model with
    /// a head (adapters 1.3 utils.py: HEAD_CONFIG_NAME, HEAD_WEIGHTS_NAME, SAFE_HEAD_WEIGHTS_NAME).
    /// `load_adapter(folder)` loads that head by default, replacing the model's own, so an export
    /// without it would not be the model that was saved.
    public static let adapterHubHeadFiles = ["head_config.json", "pytorch_model_head.bin", "model_head.safetensors"]

    /// The head files present in an AdapterHub folder, as paths.
    public static func adapterHubHead(in folder: String) -> [String] {
        adapterHubHeadFiles.map { (folder as NSString).appendingPathComponent($0) }
            .filter { FileManager.default.fileExists(atPath: $0) }
    }

    /// The tensors of a saved head that differ from `base`'s own (name, dtype, shape or bytes; a
    /// tied head is the embedding it is stored as). A head equal to the model's own, such as the
    /// untouched lm_head adapters saves for a causal LM, changes nothing when loaded. No weights
    /// file: load_adapter loads no head (adapters 1.3 loading.py, PredictionHeadLoader.load).
    public static func adapterHubHeadDifferences(in folder: String, base: BaseModel) throws -> [String] {
        let safetensors = (folder as NSString).appendingPathComponent("model_head.safetensors")
        let pickle = (folder as NSString).appendingPathComponent("pytorch_model_head.bin")
        let head: TensorSource
        if FileManager.default.fileExists(atPath: safetensors) {
            head = try SafetensorsFile(path: safetensors)
        } else if FileManager.default.fileExists(atPath: pickle) {
            head = DictionaryTensorSource(try TorchCheckpointReader.read(path: pickle), origin: pickle)
        } else {
            return []
        }
        return try head.tensorNames.sorted().filter { name in
            let stored = base.storedName(name)
            guard let info = base.checkpoint.info(stored), let saved = head.info(name),
                  info.dtype == saved.dtype, info.shape == saved.shape else { return true }
            return try head.tensor(name).bytes != base.checkpoint.tensor(stored).bytes
        }
    }

    /// Reads a PEFT or AdapterHub folder into a pack adapter. `dropUnloaded`: leave out saved
    /// tensors PEFT would not load instead of refusing them.
    public static func importFolder(_ path: String, kind: AdapterSourceKind, name: String?, dropUnloaded: Bool = false) throws -> ImportedAdapter {
        let configPath = (path as NSString).appendingPathComponent("adapter_config.json")
        if kind == .peft, !FileManager.default.fileExists(atPath: configPath) {
            let names = peftSave(path).subfolders
            throw InputError(file: path, problem: "holds PEFT adapters in sub-folders only (\(names.joined(separator: ", "))), none at its root; give one of them")
        }
        let configText = try String(contentsOfFile: configPath, encoding: .utf8)
        let candidates = kind == .peft
            ? ["adapter_model.safetensors", "adapter_model.bin"]
            : ["adapter.safetensors", "pytorch_adapter.bin"]
        guard let weightsName = candidates.first(where: { FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent($0)) }) else {
            throw InputError(file: path, problem: "has no \(candidates.joined(separator: " or "))")
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
