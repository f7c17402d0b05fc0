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
        // Buffers as the family names them (GPT-2's causal mask, BERT's position ids, rotary
        // inv_freq); for a family outside the registry, as any registered family names them.
        let families = ArchitectureRegistry.architecture(modelType: modelType, className: architecture).map { [$0] } ?? ArchitectureRegistry.all
        let buffers = infos.map(\.name).filter { name in families.contains { $0.isBuffer(name) } }
        self.buffers = buffers
        outputHead = Extract.outputHeadNames.map { $0 + ".weight" }.first { checkpoint.info($0) != nil }
        tieWordEmbeddings = configText.flatMap { try? ModelConfig.decode(Data($0.utf8)).tieWordEmbeddings }
            ?? configText.flatMap { text in
                guard case .bool(let tied)? = (try? StrictJSON.parse(Array(text.utf8)))?["tie_word_embeddings"] else { return nil }
                return tied
            }
        var parameters = infos.filter { !buffers.contains($0.name) }.reduce(0) { $0 + ($1.elementCount ?? 0) }
        // A tied head is the embedding itself: transformers counts the shared parameter once.
        if tieWordEmbeddings == true, let outputHead, let head = checkpoint.info(outputHead),
           infos.contains(where: { Extract.isTokenEmbedding($0.name) && $0.shape == head.shape && $0.name != outputHead }) {
            parameters -= head.elementCount ?? 0
        }
        self.parameters = parameters
    }
}
