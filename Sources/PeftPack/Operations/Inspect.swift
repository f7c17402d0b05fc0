import Foundation

/// `peftpack inspect`: what a pack, adapter folder or safetensors checkpoint holds.
public enum Inspect {
    public struct AdapterSummary: Encodable {
        public var name: String
        public var kind: String
        public var source: String?
        public var modules: Int
        public var targets: [String]
        public var ranks: [Int]?
        public var scales: [Double]?
        public var dora: Bool?
        public var virtualTokens: Int?
        public var layers: Int?
        public var bottleneck: String?
        public var fullTensors: Int?
        /// Rows replaced per tensor (PEFT trainable_token_indices), by target.
        public var replacedRows: [String: [Int]]?
    }

    public struct TensorSummary: Encodable {
        public var name: String
        public var dtype: String
        public var shape: [Int]
        public var rawBytes: Int
        public var storedBytes: Int?
        public var codec: String?
        public var xxh3: String?
    }

    public struct Report: Encodable {
        public var path: String
        public var kind: AdapterSourceKind
        public var formatVersion: String?
        public var creator: Creator?
        public var base: BaseModelIdentity?
        public var userMetadata: [String: String]?
        public var metadata: [String: String]?
        public var adapters: [AdapterSummary]
        public var tensorCount: Int
        public var rawBytes: Int
        public var storedBytes: Int
        public var ratio: Double
        public var verified: Bool?
        /// Model checkpoints only.
        public var model: ModelSummary? = nil
        public var tensors: [TensorSummary]?
    }

    public static func run(path: String, listTensors: Bool, verify: Bool, hashes: Bool = false) throws -> Report {
        let kind = try AdapterSourceFolder.detect(path)
        switch kind {
        case .pack:
            let reader = try PackReader(path: path)
            let document = try reader.adapterDocument()
            if verify { try reader.verifyAll() }
            let raw = reader.tensors.reduce(0) { $0 + $1.rawBytes }
            let tensors = try listTensors ? reader.tensors.map { entry in
                TensorSummary(name: entry.name, dtype: entry.dtype.rawValue, shape: entry.shape, rawBytes: entry.rawBytes,
                              storedBytes: entry.storedBytes, codec: entry.codecSummary,
                              xxh3: hashes ? XXH3.hex(try reader.withRawBytes(entry.name) { XXH3.hash64($0) }) : nil)
            } : nil
            return Report(path: path, kind: kind, formatVersion: "\(reader.majorVersion).\(reader.minorVersion)",
                          creator: document.creator, base: document.base, userMetadata: document.userMetadata,
                          adapters: document.adapters.map(summary), tensorCount: reader.tensors.count, rawBytes: raw,
                          storedBytes: reader.fileSize, ratio: raw > 0 ? Double(reader.fileSize) / Double(raw) : 0,
                          verified: verify ? true : nil, tensors: tensors)
        case .peft, .adapterhub, .mlx:
            let imported = kind == .mlx ? try MLXImporter.importAdapter(folder: path, name: nil, base: nil)
                : try AdapterSourceFolder.importFolder(path, kind: kind, name: nil)
            let raw = imported.tensors.reduce(0) { $0 + ($1.info.byteCount ?? 0) }
            let stored = (try? FileManager.default.contentsOfDirectory(atPath: path))?.reduce(0) { total, file in
                total + ((try? FileManager.default.attributesOfItem(atPath: (path as NSString).appendingPathComponent(file))[.size] as? Int) ?? 0)
            } ?? raw
            let tensors = listTensors ? imported.tensors.map {
                TensorSummary(name: $0.packName, dtype: $0.info.dtype.rawValue, shape: $0.info.shape, rawBytes: $0.info.byteCount ?? 0)
            } : nil
            return Report(path: path, kind: kind, base: PackImport.identity(from: [imported.adapter]),
                          adapters: [summary(imported.adapter)], tensorCount: imported.tensors.count, rawBytes: raw,
                          storedBytes: stored, ratio: raw > 0 ? Double(stored) / Double(raw) : 0, tensors: tensors)
        case .gguf:
            let file = try GGUF.File(path: path)
            if file.value("general.type")?.stringValue == "model" { return try modelReport(path, kind: kind, listTensors: listTensors) }
            let (imported, identity) = try GGUFLoRA.importAdapter(path: path, name: nil, base: nil)
            let raw = file.tensors.reduce(0) { $0 + $1.byteCount }
            let stored = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? raw
            let tensors = listTensors ? file.tensors.map {
                TensorSummary(name: $0.name, dtype: "\($0.type)", shape: $0.shape, rawBytes: $0.byteCount)
            } : nil
            var metadata: [String: String] = [:]
            for (key, value) in file.metadata {
                if let text = value.stringValue { metadata[key] = text } else if let number = value.doubleValue { metadata[key] = "\(number)" }
            }
            return Report(path: path, kind: kind, base: identity, metadata: metadata, adapters: [summary(imported.adapter)],
                          tensorCount: file.tensors.count, rawBytes: raw, storedBytes: stored, ratio: raw > 0 ? Double(stored) / Double(raw) : 0,
                          tensors: tensors)
        case .safetensors:
            return try modelReport(path, kind: kind, listTensors: listTensors)
        }
    }

    /// A model checkpoint: safetensors (a bitsandbytes one dequantized) or a GGUF model.
    static func modelReport(_ path: String, kind: AdapterSourceKind, listTensors: Bool) throws -> Report {
        var isFolder: ObjCBool = false
        let isModel = FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) && isFolder.boolValue || path.hasSuffix(".gguf")
        let base = isModel ? try BaseModel(folder: path) : nil
        let checkpoint = try base?.checkpoint ?? Checkpoint(path: path)
        let infos = checkpoint.infos
        let raw = infos.reduce(0) { $0 + ($1.byteCount ?? 0) }
        let tensors = listTensors ? infos.map {
            TensorSummary(name: $0.name, dtype: $0.dtype.rawValue, shape: $0.shape, rawBytes: $0.byteCount ?? 0, codec: checkpoint.shardOf($0.name))
        } : nil
        let metadata = try infos.first.flatMap { try checkpoint.metadata(ofFileHolding: $0.name) }
        let model = ModelSummary(checkpoint: checkpoint, identity: base?.identity, configText: base?.checkpoint.configText)
        let stored = model.quantization?.storedBytes ?? raw
        return Report(path: path, kind: kind, metadata: metadata, adapters: [], tensorCount: infos.count, rawBytes: raw,
                      storedBytes: stored, ratio: raw > 0 ? Double(stored) / Double(raw) : 1, model: model, tensors: tensors)
    }

    static func summary(_ adapter: Adapter) -> AdapterSummary {
        let lowRank = adapter.modules.compactMap(\.lowRank)
        let ranks = Array(Set(lowRank.map(\.rank))).sorted()
        let scales = Array(Set(lowRank.map(\.scale))).sorted()
        let full = adapter.modules.filter(\.isWholeTensor).count
        let rows = Dictionary(adapter.modules.compactMap { module in module.replacedRows.map { (module.target, $0) } }) { first, _ in first }
        return AdapterSummary(
            name: adapter.name, kind: adapter.kind.rawValue, source: adapter.source?.format, modules: adapter.modules.count,
            targets: adapter.modules.map(\.target),
            ranks: ranks.isEmpty ? nil : ranks, scales: scales.isEmpty ? nil : scales,
            dora: adapter.kind == .lora ? adapter.modules.contains { $0.lowRank != nil && $0.tensors[TensorRole.magnitude] != nil } : nil,
            virtualTokens: adapter.settings.numVirtualTokens, layers: adapter.settings.numLayers,
            bottleneck: adapter.settings.bottleneckArchitecture, fullTensors: full > 0 ? full : nil,
            replacedRows: rows.isEmpty ? nil : rows)
    }
}
