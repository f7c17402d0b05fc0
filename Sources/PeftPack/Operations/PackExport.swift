import Foundation

/// `peftpack export`: one adapter of a pack back into the folder its tool loads.
public enum PackExport {
    public typealias Format = AdapterFileFormat

    public struct Report: Encodable {
        public var output: String
        public var adapter: String
        public var format: String
        public var files: [String]
        public var tensors: Int
    }

    /// The recorded base identity, completed from a base folder (the one given, else a PEFT
    /// config's local base_model_name_or_path) when the record lacks what the exporters read;
    /// a folder whose facts or tensors disagree with the record is refused as another base.
    static func completedBase(_ recorded: BaseModelIdentity?, adapter: Adapter, folder given: String?, file: String,
                              shapes: (String) -> [Int]?) throws -> BaseModelIdentity? {
        let complete = recorded?.numLayers != nil && recorded?.modelType != nil && recorded?.tieWordEmbeddings != nil
        guard let folder = given ?? (complete ? nil : localBaseFolder(of: adapter)) else { return recorded }
        let base = try BaseModel(folder: folder)
        // Every module must fit the base, as import with the base checks.
        let targeted = try base.check(base.withModuleLayouts(adapter), shapes: shapes, file: file)
        var identity = try base.identity(binding: targeted)
        identity.nameOrPath = recorded?.nameOrPath ?? folder
        return try BaseBinding.combine([(recorded, file), (identity, folder)], namesMayDiffer: true)
    }

    /// A PEFT config's base_model_name_or_path, when it is a folder with a config.json.
    static func localBaseFolder(of adapter: Adapter) -> String? {
        guard adapter.source?.format == AdapterSourceKind.peft.rawValue, let text = adapter.source?.configText,
              let path = (try? PeftConfig(text: text, file: adapter.name))?.baseModelNameOrPath,
              FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent("config.json")) else { return nil }
        return path
    }

    /// GGUF for a .gguf output; else the tool the adapter came from, when it exports there; else
    /// the kind's first format.
    static func defaultFormat(of adapter: Adapter, output: String) -> Format {
        if output.lowercased().hasSuffix(".gguf") { return .gguf }
        if let source = adapter.source?.format, let own = Format(rawValue: source), own != .gguf, adapter.kind.exports(to: own) { return own }
        return adapter.kind.rules.exports.first ?? .peft
    }

    /// `baseFolder`: the base, for a pack recorded without it (GGUF and MLX export need its
    /// architecture, layer count and tie); without one, a PEFT config's base_model_name_or_path
    /// that names a local model folder serves.
    public static func run(pack: String, output: String, format: Format?, name: String?, force: Bool,
                           ggufType: GGUF.ElementType = .f32, baseFolder: String? = nil) throws -> Report {
        try InputProtection.check(output: output, inputs: [pack])
        let reader = try PackReader(path: pack)
        var document = try reader.adapterDocument()
        let adapter = try SelectedAdapters.adapter(named: name, in: document, file: pack)
        let chosen = format ?? defaultFormat(of: adapter, output: output)
        if chosen == .gguf || chosen == .mlx {
            document.base = try completedBase(document.base, adapter: adapter, folder: baseFolder, file: pack,
                                              shapes: { reader.entry(named: $0)?.shape })
        }
        if chosen == .gguf {
            try OutputDestination.claim(output, as: .file, force: force, inputs: [pack])
            let bytes = try GGUFLoRA.export(adapter, document: document, reader: reader, options: .init(type: ggufType))
            let writer = try AtomicFileWriter(destination: output)
            try writer.write(bytes)
            try writer.commit()
            let tensors = adapter.modules.count * 2
            return Report(output: output, adapter: adapter.name, format: chosen.rawValue, files: [(output as NSString).lastPathComponent], tensors: tensors)
        }
        let files: [(name: String, text: String?, tensors: [(key: String, tensor: HostTensor)], metadata: [String: String]?)]
        switch chosen {
        case .peft:
            let out = try PeftExporter.export(adapter, tensor: reader.readTensor)
            files = [("adapter_config.json", out.configText, [], nil), ("adapter_model.safetensors", nil, out.tensors, ["format": "pt"])]
        case .adapterhub:
            let out = try AdapterHubFormat.export(adapter, tensor: reader.readTensor)
            // Both weight files: load_adapter(dir) reads pytorch_adapter.bin by default, and
            // adapter.safetensors with use_safetensors=True.
            files = [("adapter_config.json", out.configText, [], nil), ("adapter.safetensors", nil, out.tensors, nil),
                     ("pytorch_adapter.bin", nil, out.tensors, nil)]
        case .mlx:
            let out = try MLXExporter.export(adapter, document: document, reader: reader)
            files = [(MLXAdapterFormat.configFile, out.configText, [], nil), (MLXAdapterFormat.weightsFile, nil, out.tensors, MLXAdapterFormat.weightsMetadata)]
        case .gguf:
            preconditionFailure("handled above")
        }
        let written = try FolderOutput.write(to: output, force: force, protecting: [pack]) { folder in
            for file in files {
                let path = (folder as NSString).appendingPathComponent(file.name)
                if file.name.hasSuffix(".bin") {
                    let writer = try AtomicFileWriter(destination: path)
                    try writer.write(TorchCheckpointWriter.archive(file.tensors, name: (file.name as NSString).deletingPathExtension))
                    try writer.commit()
                } else if let text = file.text {
                    let writer = try AtomicFileWriter(destination: path)
                    try writer.write(Array(text.utf8))
                    try writer.commit()
                } else {
                    try SafetensorsWriter.write(Dictionary(uniqueKeysWithValues: file.tensors.map { ($0.key, $0.tensor) }), metadata: file.metadata, to: path)
                }
            }
        }
        return Report(output: output, adapter: adapter.name, format: chosen.rawValue, files: written,
                      tensors: files.map(\.tensors.count).max() ?? 0)
    }
}
