import Foundation

/// What `inspect` says about a model checkpoint beyond its tensors: the family, dtypes, the
/// parameter count as transformers' `num_parameters()` gives it, layers, tying and sharding.
public struct ModelSummary: Encodable, Equatable {
    public var architecture: String?
    public var modelType: String?
    /// Distinct dtypes, the most frequent (by elements) first.
    public var dtypes: [String]
    public var parameters: Int
    public var layers: Int?
    /// `tie_word_embeddings` as transformers resolves it for the family (the config class's
    /// default when config.json omits it); nil for a family peftpack does not know.
    public var tieWordEmbeddings: Bool?
    /// The output head tensor the checkpoint stores (lm_head.weight), if any.
    public var outputHead: String?
    public var shards: Int
    /// Stored buffers that are not parameters (transformers ignores them on load).
    public var buffers: [String]
    /// For a quantized checkpoint: how its weights are stored (dtypes and parameters above are
    /// the logical, dequantized ones).
    public var quantization: QuantizationSummary?

    public struct QuantizationSummary: Encodable, Equatable {
        public var format: String
        /// Storage kind ("nf4+double quant", "int8", …) → number of weights stored so.
        public var weights: [String: Int]
        public var storedBytes: Int
    }

    /// `configText`: the model folder's config.json (nil for a bare safetensors file).
    public init(checkpoint: Checkpoint, identity: BaseModelIdentity?, configText: String?) {
        architecture = identity?.architecture
        modelType = identity?.modelType
        layers = identity?.numLayers
        shards = checkpoint.shardFiles.count
        let infos = checkpoint.infos
        var elementsOfDType: [String: Int] = [:]
        for info in infos { elementsOfDType[info.dtype.rawValue, default: 0] += info.elementCount ?? 0 }
        dtypes = elementsOfDType.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.map(\.key)
        // Tensors older transformers saved that are buffers, not parameters (GPT-2's causal mask,
        // BERT's position ids, rotary frequencies): the family's architecture knows them.
        let classes = TensorClasses(modelType: identity?.modelType, className: identity?.architecture)
        let buffers = infos.map(\.name).filter(classes.isBuffer)
        self.buffers = buffers
        outputHead = classes.outputHeadWeights.first { checkpoint.info($0) != nil }
        tieWordEmbeddings = configText.flatMap { try? ModelConfig.decode(Data($0.utf8)).tieWordEmbeddings }
            ?? configText.flatMap { text in
                guard case .bool(let tied)? = (try? StrictJSON.parse(Array(text.utf8)))?["tie_word_embeddings"] else { return nil }
                return tied
            }
        var parameters = infos.filter { !buffers.contains($0.name) }.reduce(0) { $0 + ($1.elementCount ?? 0) }
        // A tied head is the embedding itself: transformers counts the shared parameter once.
        if tieWordEmbeddings == true, let outputHead, let head = checkpoint.info(outputHead),
           infos.contains(where: { classes.isEmbeddingTable($0.name) && $0.shape == head.shape && $0.name != outputHead }) {
            parameters -= head.elementCount ?? 0
        }
        self.parameters = parameters
        if let decoded = checkpoint.decoded {
            quantization = QuantizationSummary(format: decoded.storageFormat, weights: decoded.storageKinds, storedBytes: decoded.storedBytes)
        }
    }
}
