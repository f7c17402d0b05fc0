import Foundation

/// A set of tensors stored as safetensors: one file, a model folder holding `model.safetensors`,
/// or a sharded set described by `model.safetensors.index.json`. Shards are opened on first use.
/// A checkpoint transformers saved from a bitsandbytes-quantized model is seen as its logical
/// tensors (`BitsandbytesWeights`): every reader of a base gets dequantized values under the
/// weights' own names, the quantization companions hidden.
public final class Checkpoint: @unchecked Sendable {
    public static let indexFileName = "model.safetensors.index.json"
    public static let singleFileName = "model.safetensors"

    /// The folder holding the files (or the file's folder).
    public let folder: String
    /// Shard file names (relative to `folder`) in index order, or the single file.
    public let shardFiles: [String]
    /// The tensors as stored (quantized weights and their companions included).
    public let storedNames: [String]
    private let shardOfTensor: [String: Int]
    private let infoOfTensor: [String: TensorInfo]
    private var openShards: [Int: SafetensorsFile] = [:]
    private let lock = NSLock()
    public let indexMetadata: [String: String]?
    /// Set when tensors are stored in a form of their own: bitsandbytes-quantized weights, or a
    /// GGUF model (all of whose tensors are decoded).
    public private(set) var decoded: DecodedWeights?
    private var quantizedNames: Set<String> = []
    private var logicalNames: [String]?
    private var visibleNames: Set<String>?

    /// The bitsandbytes reader of a bnb-quantized checkpoint.
    public var dequantizer: BitsandbytesWeights? { decoded as? BitsandbytesWeights }

    /// The tensors as a model reads them: quantized weights under their own names, companions hidden.
    public var names: [String] { logicalNames ?? storedNames }

    /// Opens the checkpoint: a safetensors file or model folder (a bitsandbytes-quantized one read
    /// through its dequantizer, an MLX-quantized one through MLXQuantizedWeights), or a GGUF model (a .gguf file, the first shard of a split one, or
    /// a folder holding one).
    public convenience init(path: String) throws {
        if let gguf = try Self.ggufModel(at: path) {
            let model = try GGUFBaseModel(path: gguf)
            self.init(decodedAt: (gguf as NSString).deletingLastPathComponent, files: model.files.map { ($0 as NSString).lastPathComponent })
            decode(model, names: model.names)
            return
        }
        try self.init(storedAt: path)
        // Only a folder storing scales is read as MLX-quantized: mlx-lm's loader quantizes a layer
        // only then, whatever else config.json says.
        if storedNames.contains(where: { $0.hasSuffix(MLXQuantizedWeights.scalesSuffix) }),
           let quantization = try MLXQuantizedWeights.quantization(of: self) {
            let weights = try MLXQuantizedWeights(checkpoint: try Checkpoint(storedAt: path), quantization: quantization)
            decode(weights, names: weights.names)
            return
        }
        guard BitsandbytesWeights.isQuantized(self) else { return }
        let dequantizer = try BitsandbytesWeights(checkpoint: try Checkpoint(storedAt: path))
        decode(dequantizer, names: dequantizer.names)
    }

    private func decode(_ weights: DecodedWeights, names: [String]) {
        decoded = weights
        quantizedNames = Set(weights.decodedNames)
        logicalNames = names
        visibleNames = Set(names)
    }

    /// The GGUF model `path` names: the file itself, or the one model a folder holds when it has
    /// no safetensors weights (a split model counts once, by its first shard).
    private static func ggufModel(at path: String) throws -> String? {
        if path.hasSuffix(".gguf") { return path }
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder), isFolder.boolValue,
              !FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent(singleFileName)),
              !FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent(indexFileName)) else { return nil }
        let files = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        let models = files.filter { $0.hasSuffix(".gguf") && !$0.contains("-of-") || $0.hasSuffix("-00001-of-" + ($0.split(separator: "-").last.map(String.init) ?? "")) }.sorted()
        guard !models.isEmpty else { return nil }
        guard models.count == 1 else {
            throw InputError(file: path, problem: "holds several GGUF models (\(models.joined(separator: ", "))); name the file")
        }
        return (path as NSString).appendingPathComponent(models[0])
    }

    /// A checkpoint all of whose tensors a decoder reads (nothing stored as safetensors).
    private init(decodedAt folder: String, files: [String]) {
        self.folder = folder
        shardFiles = files
        storedNames = []
        shardOfTensor = [:]
        infoOfTensor = [:]
        indexMetadata = nil
    }

    /// The checkpoint as stored: itself, or for a bnb-quantized one the view its dequantizer reads.
    public var stored: Checkpoint { dequantizer?.checkpoint ?? (decoded as? MLXQuantizedWeights)?.checkpoint ?? self }

    /// Whether `name` is stored in a form of its own (and read decoded).
    public func isQuantized(_ name: String) -> Bool { quantizedNames.contains(name) }

    /// How a quantized tensor is stored (nf4, Q4_K…), nil for one stored as plain values.
    public func quantizedTypeName(_ name: String) -> String? { isQuantized(name) ? decoded?.quantizedType(name) : nil }

    /// The safetensors metadata of the file holding `name` (nil for a decoded tensor).
    public func metadata(ofFileHolding name: String) throws -> [String: String]? {
        guard shardOfTensor[name] != nil, !(decoded is GGUFBaseModel) else { return nil }
        return try file(forTensor: name).metadata
    }

    /// The checkpoint exactly as stored, without dequantizing.
    public init(storedAt path: String) throws {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else {
            throw InputError(file: path, problem: "no such file or folder")
        }
        if !isFolder.boolValue {
            let file = try SafetensorsFile(path: path)
            folder = (path as NSString).deletingLastPathComponent
            shardFiles = [(path as NSString).lastPathComponent]
            storedNames = file.names
            shardOfTensor = Dictionary(uniqueKeysWithValues: file.names.map { ($0, 0) })
            infoOfTensor = Dictionary(uniqueKeysWithValues: file.infos.map { ($0.name, $0) })
            openShards[0] = file
            indexMetadata = nil
            return
        }
        folder = path
        let indexPath = (path as NSString).appendingPathComponent(Self.indexFileName)
        let singlePath = (path as NSString).appendingPathComponent(Self.singleFileName)
        if FileManager.default.fileExists(atPath: indexPath) {
            let index = try ShardIndex(path: indexPath)
            var shards: [SafetensorsFile] = []
            for shard in index.shardFiles {
                let shardPath = (path as NSString).appendingPathComponent(shard)
                guard FileManager.default.fileExists(atPath: shardPath) else {
                    throw InputError(file: indexPath, problem: "names shard \(shard), which does not exist")
                }
                shards.append(try SafetensorsFile(path: shardPath))
            }
            var shardOf: [String: Int] = [:]
            var infos: [String: TensorInfo] = [:]
            var ordered: [String] = []
            for (position, shard) in shards.enumerated() {
                for info in shard.infos {
                    guard let mapped = index.weightMap[info.name] else {
                        throw InputError(file: shard.path, tensor: info.name, problem: "is not listed in \(Self.indexFileName)")
                    }
                    guard mapped == index.shardFiles[position] else {
                        throw InputError(file: indexPath, tensor: info.name, problem: "is mapped to \(mapped) but stored in \(index.shardFiles[position])")
                    }
                    guard shardOf[info.name] == nil else {
                        throw InputError(file: shard.path, tensor: info.name, problem: "is stored in two shards")
                    }
                    shardOf[info.name] = position
                    infos[info.name] = info
                    ordered.append(info.name)
                }
            }
            for name in index.weightMap.keys.sorted() where shardOf[name] == nil {
                throw InputError(file: indexPath, tensor: name, problem: "is mapped to \(index.weightMap[name]!) but that shard does not contain it")
            }
            shardFiles = index.shardFiles
            storedNames = ordered
            shardOfTensor = shardOf
            infoOfTensor = infos
            indexMetadata = index.metadata
            for (position, shard) in shards.enumerated() { openShards[position] = shard }
        } else if FileManager.default.fileExists(atPath: singlePath) {
            let file = try SafetensorsFile(path: singlePath)
            shardFiles = [Self.singleFileName]
            storedNames = file.names
            shardOfTensor = Dictionary(uniqueKeysWithValues: file.names.map { ($0, 0) })
            infoOfTensor = Dictionary(uniqueKeysWithValues: file.infos.map { ($0.name, $0) })
            openShards[0] = file
            indexMetadata = nil
        } else {
            throw InputError(file: path, problem: "holds neither \(Self.singleFileName) nor \(Self.indexFileName)")
        }
    }

    public var infos: [TensorInfo] { names.map { info($0)! } }

    public func info(_ name: String) -> TensorInfo? {
        if let visibleNames, !visibleNames.contains(name) { return nil }
        if quantizedNames.contains(name) { return try? decoded?.tensorInfo(name) }
        return infoOfTensor[name]
    }

    /// The shard file (relative to `folder`) holding a tensor.
    public func shardOf(_ name: String) -> String? { shardOfTensor[name].map { shardFiles[$0] } }

    public func file(forTensor name: String) throws -> SafetensorsFile {
        guard info(name) != nil || quantizedNames.contains(name), let position = shardOfTensor[name] else {
            throw InputError(file: folder, tensor: name, problem: "no such tensor")
        }
        lock.lock()
        defer { lock.unlock() }
        return openShards[position]!
    }

    /// A quantized weight's bytes are its dequantized values in its logical dtype, made whole for
    /// the call.
    public func withBytes<R>(_ name: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        if quantizedNames.contains(name) { return try tensor(name).bytes.withUnsafeBytes(body) }
        return try file(forTensor: name).withBytes(name, body)
    }

    public func tensor(_ name: String) throws -> HostTensor {
        if quantizedNames.contains(name), let tensor = try decoded?.tensor(name) { return tensor }
        return try file(forTensor: name).tensor(name)
    }

    /// The text of `config.json` next to the weights, when there is one (a GGUF model's from its
    /// metadata).
    public var configText: String? {
        if let text = decoded?.configText { return text }
        let path = (folder as NSString).appendingPathComponent("config.json")
        return try? String(contentsOfFile: path, encoding: .utf8)
    }
}

/// `model.safetensors.index.json`: `{"metadata": {...}, "weight_map": {tensor: shard file}}`.
struct ShardIndex {
    var weightMap: [String: String]
    /// Distinct shard files in order of first appearance in the file's weight map.
    var shardFiles: [String]
    var metadata: [String: String]?

    init(path: String) throws {
        let mapped = try MappedFile(path: path)
        let json: StrictJSON
        do {
            json = try StrictJSON.parse(mapped.bytes)
        } catch let error as StrictJSONError {
            throw InputError(file: path, problem: "is not valid JSON: \(error)")
        }
        guard let map = json["weight_map"]?.objectMembers else {
            throw InputError(file: path, problem: "has no weight_map object")
        }
        var weightMap: [String: String] = [:]
        var files: [String] = []
        for (name, value) in map {
            guard let file = value.stringValue else {
                throw InputError(file: path, tensor: name, problem: "weight_map value is not a file name")
            }
            guard !file.contains("/"), file != "..", !file.isEmpty else {
                throw InputError(file: path, tensor: name, problem: "weight_map names \(file), which is not a file in the same folder")
            }
            weightMap[name] = file
            if !files.contains(file) { files.append(file) }
        }
        self.weightMap = weightMap
        shardFiles = files.sorted()
        if let members = json["metadata"]?.objectMembers {
            var metadata: [String: String] = [:]
            for (key, value) in members {
                switch value {
                case .string(let text): metadata[key] = text
                case .integer(let number): metadata[key] = String(number)
                default: continue
                }
            }
            self.metadata = metadata
        }
    }
}

extension Checkpoint {
    /// A tensor's bytes window by window, pages dropped behind (see SafetensorsFile.streamBytes).
    public func streamBytes(_ name: String, window: Int = SafetensorsFile.streamWindow,
                            _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard quantizedNames.contains(name) else { return try file(forTensor: name).streamBytes(name, window: window, body) }
        try withBytes(name) { bytes in
            var start = 0
            repeat {
                let end = min(start + window, bytes.count)
                try body(UnsafeRawBufferPointer(rebasing: bytes[start..<end]))
                start = end
            } while start < bytes.count
        }
    }

    /// Drops the mapped pages of bytes `range` of a tensor (a decoded one's are its decoder's).
    public func releasePages(_ name: String, bytes range: Range<Int>) {
        guard !quantizedNames.contains(name) else { return }
        (try? file(forTensor: name))?.releasePages(name, bytes: range)
    }

    /// Starts reading a stored tensor's bytes ahead of use (SafetensorsFile.prefetch).
    public func prefetch(_ name: String) {
        (try? file(forTensor: name))?.prefetch(name)
    }

    /// Drops a tensor's mapped pages from this process (see SafetensorsFile.releasePages).
    public func releasePages(_ name: String) {
        guard !quantizedNames.contains(name) else { return }
        (try? file(forTensor: name))?.releasePages(name)
    }

    /// The model config of config.json next to the weights (or a GGUF model's metadata).
    public func modelConfig() throws -> ModelConfig {
        guard let text = configText else { throw RuntimeError.invalidConfig("cannot read \((folder as NSString).appendingPathComponent("config.json"))") }
        return try ModelConfig.decode(Data(text.utf8))
    }
}
