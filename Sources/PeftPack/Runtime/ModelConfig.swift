import Foundation

/// The hyper-parameters of a base model, read from its config.json the way transformers 5.x
/// interprets them: serialized field names, the config classes' defaults for missing fields, and
/// both the 5.x `rope_parameters` and the 4.x `rope_theta` + `rope_scaling` spellings.
public struct ModelConfig: Sendable, Equatable {
    public var modelType: String
    /// What peftpack knows about the family `model_type` names.
    public var family: Architecture
    /// `architectures[0]`, e.g. "LlamaForCausalLM"; informational.
    public var architecture: String?
    public var vocabSize: Int
    public var hiddenSize: Int
    public var numLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    public var intermediateSize: Int
    public var maxPositionEmbeddings: Int
    /// bert: rows of the token-type embedding.
    public var typeVocabSize: Int
    /// transformers ACT2FN name of the feed-forward activation.
    public var activation: String
    /// LayerNorm epsilon (bert, gpt2) or RMSNorm epsilon (rotary decoders).
    public var normEpsilon: Double
    /// Rotary decoders: the rope of every layer, or of the full-attention layers when
    /// `slidingRope` is set.
    public var rope: RopeParameters?
    /// Gemma 3: the sliding-window layers' own rope (a local base frequency).
    public var slidingRope: RopeParameters?
    /// Multiplies query·key scores when it is not 1/√head_dim (Gemma's query_pre_attn_scalar^-½).
    public var attentionScale: Double?
    /// Gemma 2: soft-capping of attention scores and of the final logits, cap · tanh(x / cap).
    public var attentionSoftcap: Double?
    public var finalLogitSoftcap: Double?
    public var queryKeyValueBias: Bool
    public var attentionOutputBias: Bool
    public var mlpBias: Bool
    public var tieWordEmbeddings: Bool
    /// Layers whose causal attention only reaches the last `slidingWindow` positions.
    public var slidingWindow: Int?
    public var slidingWindowLayers: Set<Int>
    /// gpt2: divide scores by √head_dim; additionally by (layer + 1).
    public var scaleAttentionWeights: Bool
    public var scaleAttentionByInverseLayerIndex: Bool
    /// Sequence classifiers: `len(id2label)`, else `num_labels`, else transformers' default 2.
    public var numLabels: Int
    /// The token a decoder classifier skips when it looks for each sequence's last token.
    public var padTokenId: Int?

    /// Reads config.json text with the strict parser (duplicate keys refused, as for every other
    /// JSON input); every failure becomes a one-line `RuntimeError.invalidConfig`.
    public static func decode(_ data: Data) throws -> ModelConfig {
        try ModelConfig(fields: ConfigFields(parsing: Array(data)))
    }

    public static func load(contentsOf url: URL) throws -> ModelConfig {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw RuntimeError.invalidConfig("cannot read \(url.path)")
        }
        return try decode(data)
    }
}

extension ModelConfig {
    enum Key: String {
        case modelType = "model_type", architectures
        case vocabSize = "vocab_size", hiddenSize = "hidden_size", numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads", numKeyValueHeads = "num_key_value_heads"
        case headDim = "head_dim", intermediateSize = "intermediate_size"
        case maxPositionEmbeddings = "max_position_embeddings", typeVocabSize = "type_vocab_size"
        case attentionBias = "attention_bias", mlpBias = "mlp_bias"
        case tieWordEmbeddings = "tie_word_embeddings"
        case ropeParameters = "rope_parameters", ropeScaling = "rope_scaling", ropeTheta = "rope_theta"
        case partialRotaryFactor = "partial_rotary_factor"
        case slidingWindow = "sliding_window", layerTypes = "layer_types"
        case id2label, numLabels = "num_labels", padTokenId = "pad_token_id"
    }

    init(fields c: ConfigFields<Key>) throws {
        modelType = try c.string(.modelType) ?? ""
        architecture = try c.strings(.architectures)?.first
        guard !modelType.isEmpty else { throw RuntimeError.invalidConfig("model_type is missing") }
        guard let family = ArchitectureRegistry.architecture(modelType: modelType) else {
            throw RuntimeError.unsupportedArchitecture("model_type \(modelType)")
        }
        self.family = family
        let defaults = family.configDefaults
        let named = c.reading(ConfigFieldName.self)
        hiddenSize = try c.int(.hiddenSize) ?? defaults.hiddenSize
        numLayers = try c.int(.numHiddenLayers) ?? defaults.numLayers
        numAttentionHeads = try c.int(.numAttentionHeads) ?? defaults.numAttentionHeads
        maxPositionEmbeddings = try c.int(.maxPositionEmbeddings) ?? defaults.maxPositionEmbeddings
        intermediateSize = try c.int(.intermediateSize) ?? defaults.intermediateSize
        activation = try named.string(defaults.activationKey) ?? defaults.activation
        normEpsilon = try named.double(defaults.epsilonKey) ?? defaults.normEpsilon
        vocabSize = try c.int(.vocabSize) ?? defaults.vocabSize
        typeVocabSize = try c.int(.typeVocabSize) ?? 2
        numKeyValueHeads = 0
        headDim = 0
        tieWordEmbeddings = try c.bool(.tieWordEmbeddings) ?? family.tiesEmbeddingsByDefault
        (queryKeyValueBias, attentionOutputBias, mlpBias) = (false, false, false)
        scaleAttentionWeights = true
        scaleAttentionByInverseLayerIndex = false
        numLabels = try c.stringMap(.id2label)?.count ?? c.int(.numLabels) ?? 2
        padTokenId = try c.int(.padTokenId)
        slidingWindow = nil
        slidingWindowLayers = []
        try family.readConfig(&self, c)
        guard numAttentionHeads > 0 else { throw RuntimeError.invalidConfig("num_attention_heads must be positive") }
        if numKeyValueHeads == 0 { numKeyValueHeads = numAttentionHeads }
        if headDim == 0 { headDim = hiddenSize / numAttentionHeads }
        try validate()
    }

    /// The grouped key/value heads and explicit head size rotary decoders read. A config class
    /// with its own head_dim default (Qwen3Config: 128) passes it; the others derive it.
    mutating func readAttentionShape(_ c: ConfigFields<Key>, defaultKeyValueHeads: Int? = nil, defaultHeadDim: Int? = nil) throws {
        guard numAttentionHeads > 0 else { throw RuntimeError.invalidConfig("num_attention_heads must be positive") }
        numKeyValueHeads = try c.int(.numKeyValueHeads) ?? defaultKeyValueHeads ?? numAttentionHeads
        headDim = try c.int(.headDim) ?? defaultHeadDim ?? hiddenSize / numAttentionHeads
    }

    /// Layers listed as "sliding_attention" in `layer_types`, when the config has it.
    static func slidingLayers(_ c: ConfigFields<Key>) throws -> Set<Int>? {
        guard let types = try c.strings(.layerTypes) else { return nil }
        return Set(types.indices.filter { types[$0] == "sliding_attention" })
    }

    static func readRope(_ c: ConfigFields<Key>, maxPositionEmbeddings: Int) throws -> RopeParameters {
        // 4.x `rope_scaling` wins over 5.x `rope_parameters` as in convert_rope_params_to_dict; a
        // top-level `rope_theta` fills in when the dictionary has none.
        let dictionary = try c.object(.ropeScaling, keys: RopeParameters.Key.self)
            ?? c.object(.ropeParameters, keys: RopeParameters.Key.self)
        var rope = try dictionary.map(RopeParameters.init(fields:)) ?? RopeParameters()
        if rope.theta == nil { rope.theta = try c.double(.ropeTheta) ?? 10_000 }
        if rope.partialRotaryFactor == nil {
            rope.partialRotaryFactor = try c.double(.partialRotaryFactor)
        }
        if rope.originalMaxPositionEmbeddings == nil, [.llama3, .yarn, .longrope].contains(rope.type) {
            rope.originalMaxPositionEmbeddings = maxPositionEmbeddings
        }
        return rope
    }

    /// Checks what the forward pass relies on; `TransformerModel.load` repeats it because the
    /// fields are public and may have been edited after decoding.
    func validate() throws {
        let sizes: [(String, Int)] = [
            ("vocab_size", vocabSize), ("hidden_size", hiddenSize), ("num_hidden_layers", numLayers),
            ("num_attention_heads", numAttentionHeads), ("num_key_value_heads", numKeyValueHeads),
            ("head_dim", headDim), ("intermediate_size", intermediateSize),
            ("max_position_embeddings", maxPositionEmbeddings), ("type_vocab_size", typeVocabSize),
        ]
        // BLAS takes 32-bit dimensions; bounding every size also keeps products of two in range.
        for (name, value) in sizes where value <= 0 || value > Int(Int32.max) {
            throw RuntimeError.invalidConfig("\(name) must be in 1...\(Int32.max), got \(value)")
        }
        if let slidingWindow, slidingWindow <= 0 {
            throw RuntimeError.invalidConfig("sliding_window must be positive, got \(slidingWindow)")
        }
        if rope == nil, hiddenSize % numAttentionHeads != 0 || headDim * numAttentionHeads != hiddenSize {
            throw RuntimeError.invalidConfig(
                "hidden_size \(hiddenSize) is not a multiple of num_attention_heads \(numAttentionHeads)")
        }
        if numAttentionHeads % numKeyValueHeads != 0 {
            throw RuntimeError.invalidConfig(
                "num_attention_heads \(numAttentionHeads) is not a multiple of num_key_value_heads \(numKeyValueHeads)")
        }
        if rope != nil, headDim % 2 != 0 {
            throw RuntimeError.invalidConfig("head_dim \(headDim) must be even for rotary embeddings")
        }
        try ActivationFunction.validate(activation)
        try rope?.validate(headDim: headDim)
        try slidingRope?.validate(headDim: headDim)
        for (name, cap) in [("attn_logit_softcapping", attentionSoftcap), ("final_logit_softcapping", finalLogitSoftcap)] {
            if let cap, !(cap > 0) { throw RuntimeError.invalidConfig("\(name) must be positive, got \(cap)") }
        }
    }
}

/// The defaults of a family's transformers config class for fields a config.json may omit, and
/// the names it serializes the activation and the norm epsilon under.
struct ConfigDefaults: Sendable {
    var vocabSize = 32000, hiddenSize = 4096, numLayers = 32, numAttentionHeads = 32
    var intermediateSize = 11008, maxPositionEmbeddings = 2048
    var activation = "silu", normEpsilon = 1e-6
    var activationKey: ConfigFieldName = "hidden_act"
    var epsilonKey: ConfigFieldName = "rms_norm_eps"
}
