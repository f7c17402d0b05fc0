import Foundation

/// The hyper-parameters of a base model, read from its config.json the way transformers 5.x
/// interprets them: serialized field names, the config classes' defaults for missing fields, and
/// both the 5.x `rope_parameters` and the 4.x `rope_theta` + `rope_scaling` spellings.
public struct ModelConfig: Sendable, Equatable {
    /// The computation a model family runs; several `model_type`s share one.
    public enum Family: String, Sendable {
        /// Post-LayerNorm encoder with absolute and token-type embeddings (BertModel).
        case bert
        /// Pre-RMSNorm decoder with RoPE, SwiGLU and grouped-query attention (llama, mistral, qwen2).
        case llama
        /// Pre-LayerNorm decoder with learned positions and Conv1D weights (gpt2).
        case gpt2
    }

    public var modelType: String
    public var family: Family
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
    /// LayerNorm epsilon (bert, gpt2) or RMSNorm epsilon (llama family).
    public var normEpsilon: Double
    /// llama family only.
    public var rope: RopeParameters?
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
        case hiddenAct = "hidden_act", layerNormEps = "layer_norm_eps", rmsNormEps = "rms_norm_eps"
        case attentionBias = "attention_bias", mlpBias = "mlp_bias"
        case tieWordEmbeddings = "tie_word_embeddings"
        case ropeParameters = "rope_parameters", ropeScaling = "rope_scaling", ropeTheta = "rope_theta"
        case partialRotaryFactor = "partial_rotary_factor"
        case slidingWindow = "sliding_window", useSlidingWindow = "use_sliding_window"
        case maxWindowLayers = "max_window_layers", layerTypes = "layer_types"
        case isDecoder = "is_decoder"
        case id2label, numLabels = "num_labels", padTokenId = "pad_token_id"
        // GPT-2 serializes its own names (GPT2Config.attribute_map).
        case nEmbd = "n_embd", nLayer = "n_layer", nHead = "n_head", nInner = "n_inner"
        case nPositions = "n_positions", activationFunction = "activation_function"
        case layerNormEpsilon = "layer_norm_epsilon", scaleAttnWeights = "scale_attn_weights"
        case scaleAttnByInverseLayerIdx = "scale_attn_by_inverse_layer_idx"
    }

    init(fields c: ConfigFields<Key>) throws {
        modelType = try c.string(.modelType) ?? ""
        architecture = try c.strings(.architectures)?.first
        switch modelType {
        case "bert": family = .bert
        case "llama", "mistral", "qwen2": family = .llama
        case "gpt2": family = .gpt2
        case "": throw RuntimeError.invalidConfig("model_type is missing")
        default: throw RuntimeError.unsupportedArchitecture("model_type \(modelType)")
        }
        let defaults = FamilyDefaults(modelType: modelType)
        // GPT-2 serializes its own names first (GPT2Config.attribute_map); other families ignore them.
        let usesGPT2Names = family == .gpt2
        func gpt2Name(_ key: Key) throws -> Int? { try usesGPT2Names ? c.int(key) : nil }
        hiddenSize = try gpt2Name(.nEmbd) ?? c.int(.hiddenSize) ?? defaults.hiddenSize
        numLayers = try gpt2Name(.nLayer) ?? c.int(.numHiddenLayers) ?? defaults.numLayers
        numAttentionHeads = try gpt2Name(.nHead) ?? c.int(.numAttentionHeads) ?? defaults.numAttentionHeads
        maxPositionEmbeddings = try gpt2Name(.nPositions) ?? c.int(.maxPositionEmbeddings) ?? defaults.maxPositionEmbeddings
        intermediateSize = try family == .gpt2
            ? c.int(.nInner) ?? 4 * hiddenSize : c.int(.intermediateSize) ?? defaults.intermediateSize
        activation = try c.string(family == .gpt2 ? .activationFunction : .hiddenAct) ?? defaults.activation
        let epsilonKey: Key = switch family { case .gpt2: .layerNormEpsilon; case .bert: .layerNormEps; case .llama: .rmsNormEps }
        normEpsilon = try c.double(epsilonKey) ?? defaults.normEpsilon
        vocabSize = try c.int(.vocabSize) ?? defaults.vocabSize
        typeVocabSize = try c.int(.typeVocabSize) ?? 2
        guard numAttentionHeads > 0 else { throw RuntimeError.invalidConfig("num_attention_heads must be positive") }
        // Only the Llama family reads grouped key/value heads and an explicit head size.
        numKeyValueHeads = try family == .llama
            ? c.int(.numKeyValueHeads) ?? defaults.numKeyValueHeads ?? numAttentionHeads : numAttentionHeads
        headDim = try family == .llama ? c.int(.headDim) ?? hiddenSize / numAttentionHeads : hiddenSize / numAttentionHeads
        tieWordEmbeddings = EmbeddingTie.isTied(configured: try c.bool(.tieWordEmbeddings), modelType: modelType)
        (queryKeyValueBias, attentionOutputBias, mlpBias) = try Self.biases(c, modelType: modelType)
        scaleAttentionWeights = try c.bool(.scaleAttnWeights) ?? true
        scaleAttentionByInverseLayerIndex = try c.bool(.scaleAttnByInverseLayerIdx) ?? false
        numLabels = try c.stringMap(.id2label)?.count ?? c.int(.numLabels) ?? 2
        padTokenId = try c.int(.padTokenId)
        if family == .bert, try c.bool(.isDecoder) ?? false {
            throw RuntimeError.unsupportedArchitecture("BERT with is_decoder=true")
        }
        rope = nil
        slidingWindow = nil
        slidingWindowLayers = []
        if family == .llama {
            rope = try Self.readRope(c, maxPositionEmbeddings: maxPositionEmbeddings)
            try readSlidingWindow(c)
        }
        try validate()
    }

    private static func biases(_ c: ConfigFields<Key>, modelType: String) throws
        -> (queryKeyValue: Bool, attentionOutput: Bool, mlp: Bool)
    {
        switch modelType {
        case "llama":
            let attentionBias = try c.bool(.attentionBias) ?? false
            return (attentionBias, attentionBias, try c.bool(.mlpBias) ?? false)
        case "qwen2": return (true, false, false)
        case "mistral": return (false, false, false)
        default: return (true, true, true)
        }
    }

    private static func readRope(_ c: ConfigFields<Key>, maxPositionEmbeddings: Int) throws -> RopeParameters {
        // 4.x `rope_scaling` wins over 5.x `rope_parameters` as in convert_rope_params_to_dict; a
        // top-level `rope_theta` fills in when the dictionary has none.
        let dictionary = try c.object(.ropeScaling, keys: RopeParameters.Key.self)
            ?? c.object(.ropeParameters, keys: RopeParameters.Key.self)
        var rope = try dictionary.map(RopeParameters.init(fields:)) ?? RopeParameters()
        if rope.theta == nil { rope.theta = try c.double(.ropeTheta) ?? 10_000 }
        if rope.partialRotaryFactor == nil {
            rope.partialRotaryFactor = try c.double(.partialRotaryFactor)
        }
        if rope.originalMaxPositionEmbeddings == nil, [.llama3, .yarn].contains(rope.type) {
            rope.originalMaxPositionEmbeddings = maxPositionEmbeddings
        }
        return rope
    }

    private mutating func readSlidingWindow(_ c: ConfigFields<Key>) throws {
        switch modelType {
        case "mistral":
            // MistralConfig defaults to a 4096 window on every layer; an explicit null disables it.
            slidingWindow = try c.contains(.slidingWindow) ? c.int(.slidingWindow) : 4096
            if slidingWindow != nil { slidingWindowLayers = Set(0..<numLayers) }
        case "qwen2":
            guard try c.bool(.useSlidingWindow) ?? false else { return }
            slidingWindow = try c.int(.slidingWindow) ?? 4096
            if let types = try c.strings(.layerTypes) {
                slidingWindowLayers = Set(types.indices.filter { types[$0] == "sliding_attention" })
            } else {
                let firstSliding = try c.int(.maxWindowLayers) ?? 28
                slidingWindowLayers = Set(numLayers > firstSliding ? Array(firstSliding..<numLayers) : [])
            }
        default:
            return
        }
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
        if family != .llama, hiddenSize % numAttentionHeads != 0 || headDim * numAttentionHeads != hiddenSize {
            throw RuntimeError.invalidConfig(
                "hidden_size \(hiddenSize) is not a multiple of num_attention_heads \(numAttentionHeads)")
        }
        if numAttentionHeads % numKeyValueHeads != 0 {
            throw RuntimeError.invalidConfig(
                "num_attention_heads \(numAttentionHeads) is not a multiple of num_key_value_heads \(numKeyValueHeads)")
        }
        if family == .llama, headDim % 2 != 0 {
            throw RuntimeError.invalidConfig("head_dim \(headDim) must be even for rotary embeddings")
        }
        try ActivationFunction.validate(activation)
        try rope?.validate(headDim: headDim)
    }
}

/// The defaults of the transformers config classes for fields a config.json may omit.
private struct FamilyDefaults {
    var vocabSize = 32000, hiddenSize = 4096, numLayers = 32, numAttentionHeads = 32
    var numKeyValueHeads: Int? = nil
    var intermediateSize = 11008, maxPositionEmbeddings = 2048
    var activation = "silu", normEpsilon = 1e-6

    init(modelType: String) {
        switch modelType {
        case "bert":
            (vocabSize, hiddenSize, numLayers, numAttentionHeads) = (30522, 768, 12, 12)
            (intermediateSize, maxPositionEmbeddings, activation) = (3072, 512, "gelu")
            normEpsilon = 1e-12
        case "gpt2":
            (vocabSize, hiddenSize, numLayers, numAttentionHeads) = (50257, 768, 12, 12)
            (maxPositionEmbeddings, activation, normEpsilon) = (1024, "gelu_new", 1e-5)
        case "mistral":
            (intermediateSize, maxPositionEmbeddings, numKeyValueHeads) = (14336, 4096 * 32, 8)
        case "qwen2":
            (vocabSize, intermediateSize, maxPositionEmbeddings) = (151936, 22016, 32768)
        default:
            break
        }
    }
}
