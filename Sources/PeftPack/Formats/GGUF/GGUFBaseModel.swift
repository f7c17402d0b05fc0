/// A llama.cpp GGUF model as a base: its tensors under the checkpoint names transformers saves
/// (`GGUFTensorNames`), in row-major shapes (GGUF lists dims innermost first), dequantized as
/// gguf-py does, with what convert_hf_to_gguf.py did to the values undone (`GGUFValueTransform`:
/// q/k rows permuted for llama.cpp's rope, Gemma's norms stored + 1); and the config its metadata
/// gives. A split model reads as one (`GGUFShards`), named by its first shard. Any family whose
/// `LlamaCppNaming` names its tensors reads.
///
/// F32, F16 and BF16 tensors keep their dtype; quantized ones present as fp32, the precision
/// their dequantized values are exact in. Values are read from the map as the runtime widens them,
/// a block-aligned range at a time (a permuted q/k matrix whole), so a model is never dequantized
/// in memory at once.
public final class GGUFBaseModel: DecodedWeights {
    public let path: String
    public let config: ModelConfig
    /// The config.json transformers would hold for this model, from the metadata.
    public let configText: String?
    public let names: [String]
    private let stored: [String: StoredTensor]

    struct StoredTensor {
        let file: GGUF.File
        let entry: GGUF.TensorEntry
        let transform: GGUFValueTransform

        var dtype: DType {
            // Stored − 1 is not exact in a half-precision dtype.
            if transform == .plusOne { return .f32 }
            return switch entry.type {
            case .f16: .f16
            case .bf16: .bf16
            default: .f32
            }
        }
    }

    public init(path: String) throws {
        self.path = path
        let shards = try GGUFShards.open(path)
        let (family, architecture) = try Self.family(of: shards[0])
        let mapped = try Self.checkpointTensors(shards, family: family)
        let (config, configText) = try GGUFModelConfig.read(shards[0], family: family, architecture: architecture, facts: try Self.facts(mapped, family: family, path: path))
        var stored: [String: StoredTensor] = [:]
        for tensor in mapped {
            stored[tensor.name] = StoredTensor(file: tensor.file, entry: tensor.entry,
                                               transform: try Self.transform(tensor, family: family, config: config))
        }
        self.config = config
        self.configText = configText
        names = mapped.map(\.name)
        self.stored = stored
    }

    private typealias MappedTensor = (name: String, file: GGUF.File, entry: GGUF.TensorEntry, module: LayerModule?)

    /// The registered family whose llama.cpp graph the file names and whose GGUF models peftpack reads.
    private static func family(of file: GGUF.File) throws -> (Architecture, String) {
        let fileType = file.value("general.type")?.stringValue ?? "model"
        guard fileType == "model" else {
            throw InputError(file: file.path, problem: "is a GGUF \(fileType) (general.type), not a model")
        }
        let architecture = file.value("general.architecture")?.stringValue ?? "none"
        let readable = ArchitectureRegistry.all.filter { $0.llamaCpp?.modelTensors != nil }
        guard let family = readable.first(where: { $0.llamaCpp?.architecture == architecture }) else {
            let names = Set(readable.compactMap { $0.llamaCpp?.architecture }).sorted().joined(separator: ", ")
            throw InputError(file: file.path, problem: "is a GGUF model of architecture \(architecture); peftpack reads \(names) models")
        }
        return (family, architecture)
    }

    /// Every tensor of every shard under its checkpoint name (a tensor without one keeps its
    /// llama.cpp name, and the runtime reports it unused).
    private static func checkpointTensors(_ shards: [GGUF.File], family: Architecture) throws -> [MappedTensor] {
        var tensors: [MappedTensor] = []
        var seen = Set<String>()
        for shard in shards {
            for entry in shard.tensors {
                if entry.name == "rope_freqs.weight" {
                    throw InputError(file: shard.path, tensor: entry.name, problem: "holds Llama 3 rope frequency factors, which peftpack does not read from GGUF yet")
                }
                if entry.name.hasPrefix("rope_factors_") {
                    throw InputError(file: shard.path, tensor: entry.name, problem: "holds LongRoPE frequency factors, which peftpack does not read from GGUF yet")
                }
                let (name, module) = GGUFTensorNames.checkpointName(gguf: entry.name, family: family) ?? (entry.name, nil)
                guard seen.insert(name).inserted else {
                    throw InputError(file: shard.path, tensor: entry.name, problem: "appears in two shards of the model")
                }
                tensors.append((name, shard, entry, module))
            }
        }
        return tensors
    }

    /// What the config takes from the tensors: the vocabulary (token_embd's rows), whether the
    /// head is tied (no `output` tensor) and whether projections carry biases (Llama's
    /// attention_bias and mlp_bias, read off layer 0).
    private static func facts(_ tensors: [MappedTensor], family: Architecture, path: String) throws -> GGUFModelConfig.TensorFacts {
        let shapes = Dictionary(tensors.map { ($0.name, $0.entry.shape) }, uniquingKeysWith: { first, _ in first })
        guard let embedding = shapes[family.tokenEmbeddingWeight], embedding.count == 2 else {
            throw InputError(file: path, problem: "has no 2-D token_embd.weight, the token embedding")
        }
        let biasOfLayer0 = { (suffix: String) in shapes["\(family.checkpointPrefix).\(family.layerModulePath(0, suffix)).bias"] != nil }
        return GGUFModelConfig.TensorFacts(
            vocabSize: embedding[0], tiedHead: family.outputHead.map { shapes["\($0).weight"] == nil } ?? false,
            attentionBias: biasOfLayer0("self_attn.q_proj"), mlpBias: biasOfLayer0("mlp.up_proj"))
    }

    /// What convert_hf_to_gguf.py did to this tensor's values: LlamaModel.permute on q_proj's rows
    /// with the query heads and k_proj's with the key/value heads, when the family's graph wants
    /// rotary pairs side by side; + 1 on every `…norm.weight` of a family whose modify_tensors
    /// adds it (its test, on the checkpoint name).
    private static func transform(_ tensor: MappedTensor, family: Architecture, config: ModelConfig) throws -> GGUFValueTransform {
        guard let naming = family.llamaCpp else { return .none }
        if naming.storesNormsPlusOne, tensor.module == nil, tensor.name.hasSuffix("norm.weight") { return .plusOne }
        guard naming.permutesRotaryRows, let rows = tensor.module?.rotaryRows else { return .none }
        let heads = rows == .queryHeads ? config.numAttentionHeads : config.numKeyValueHeads
        guard tensor.entry.shape[0] % (2 * heads) == 0 else {
            throw InputError(file: tensor.file.path, tensor: tensor.entry.name, problem: "has \(tensor.entry.shape[0]) rows, which do not split into \(heads) rotary heads of pairs")
        }
        return .permutedRows(heads: heads)
    }

    public func requantized(_ name: String, values: [Float]) throws -> [Float]? {
        guard let tensor = stored[name], tensor.entry.type.isQuantized else { return nil }
        let type = tensor.entry.type
        let blocks = GGUF.encode(storedOrder(name, checkpointValues: values), as: type)
        var read = [Float](repeating: 0, count: values.count)
        blocks.withUnsafeBytes { source in read.withUnsafeMutableBufferPointer { type.dequantize(source, into: $0) } }
        tensor.transform.toCheckpoint(&read, rows: tensor.entry.shape[0])
        return read
    }

    public func quantizedType(_ name: String) -> String? {
        stored[name].flatMap { $0.entry.type.isQuantized ? $0.entry.type.ggmlName : nil }
    }

    public var decodedNames: [String] { names }
    public var storageFormat: String { "gguf" }
    public var storageKinds: [String: Int] {
        Dictionary(grouping: stored.values, by: { $0.entry.type.ggmlName }).mapValues(\.count)
    }
    public var storedBytes: Int { stored.values.reduce(0) { $0 + $1.entry.byteCount } }
    /// The files the model is stored in (its shards, in order).
    public var files: [String] { Array(Set(stored.values.map(\.file.path))).sorted() }

    /// The GGUF tensor a checkpoint tensor is stored as (file, entry), for writing a model back.
    func storedEntry(_ name: String) -> (file: GGUF.File, entry: GGUF.TensorEntry)? {
        stored[name].map { ($0.file, $0.entry) }
    }

    /// Checkpoint values of `name` put back the way the converter stores them (the inverse of
    /// what reading undid, `GGUFValueTransform.toStored`), so a merged tensor is written as the
    /// file it replaces would hold it.
    func storedOrder(_ name: String, checkpointValues values: [Float]) -> [Float] {
        guard let tensor = stored[name] else { return values }
        return tensor.transform.toStored(values, rows: tensor.entry.shape[0])
    }

    public func tensorInfo(_ name: String) throws -> TensorInfo? {
        stored[name].map { TensorInfo(name: name, dtype: $0.dtype, shape: $0.entry.shape) }
    }

    public func tensor(_ name: String) throws -> HostTensor? {
        guard let tensor = stored[name] else { return nil }
        let count = Shape.elementCount(tensor.entry.shape)!
        var values = [Float](repeating: 0, count: count)
        try values.withUnsafeMutableBufferPointer { try widen(name, elements: 0..<count, into: $0) }
        // Narrowing to F16/BF16 gives back the stored values: they came from that dtype.
        return HostTensor(floats: values, shape: tensor.entry.shape, dtype: tensor.dtype)
    }

    public func widen(_ name: String, elements range: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) throws {
        guard let tensor = stored[name] else { throw InputError(file: path, tensor: name, problem: "no such tensor") }
        let entry = tensor.entry
        let count = Shape.elementCount(entry.shape)!
        precondition(range.lowerBound >= 0 && range.upperBound <= count && destination.count == range.count)
        guard tensor.transform.isElementwise else {
            var values = tensor.file.floats(entry)
            tensor.transform.toCheckpoint(&values, rows: entry.shape[0])
            values.withUnsafeBufferPointer { _ = destination.initialize(from: $0[range]) }
            return
        }
        defer { tensor.transform.toCheckpoint(destination) }
        let (blockElements, blockBytes) = entry.type.block
        let firstBlock = range.lowerBound / blockElements
        let endBlock = (range.upperBound + blockElements - 1) / blockElements
        tensor.file.withBytes(entry) { bytes in
            let source = UnsafeRawBufferPointer(rebasing: bytes[(firstBlock * blockBytes)..<(endBlock * blockBytes)])
            if firstBlock * blockElements == range.lowerBound, endBlock * blockElements == range.upperBound {
                entry.type.dequantize(source, into: destination)
                return
            }
            let whole = [Float](unsafeUninitializedCapacity: (endBlock - firstBlock) * blockElements) { buffer, initialized in
                entry.type.dequantize(source, into: buffer)
                initialized = buffer.count
            }
            let skip = range.lowerBound - firstBlock * blockElements
            whole.withUnsafeBufferPointer { _ = destination.initialize(from: $0[skip..<(skip + range.count)]) }
        }
    }
}
