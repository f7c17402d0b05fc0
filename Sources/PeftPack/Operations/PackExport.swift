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

    /// GGUF for a .gguf output; else the tool the adapter came from, when it exports there; else
    /// the kind's first format.
    static func defaultFormat(of adapter: Adapter, output: String) -> Format {
        if output.lowercased().hasSuffix(".gguf") { return .gguf }
        if let source = adapter.source?.format, let own = Format(rawValue: source), own != .gguf, adapter.kind.exports(to: own) { return own }
        return adapter.kind.rules.exports.first ?? .peft
    }

    public static func run(pack: String, output: String, format: Format?, name: String?, force: Bool,
                           ggufType: GGUF.ElementType = .f32) throws -> Report {
        try InputProtection.check(output: output, inputs: [pack])
        let reader = try PackReader(path: pack)
        let document = try reader.adapterDocument()
        let adapter = try SelectedAdapters.adapter(named: name, in: document, file: pack)
        let chosen = format ?? defaultFormat(of: adapter, output: output)
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
