import Foundation

extension Architecture {
    /// Gemma2ForCausalLM (transformers' modeling_gemma2): Llama's projections with a GeGLU
    /// feed-forward block (tanh GELU), the token embedding scaled by √hidden_size, RMSNorms that
    /// scale by (1 + w) in fp32, a norm on each sub-block's output besides the one before it
    /// (pre/post attention, pre/post feed-forward), tanh soft-capping of attention scores and final
    /// logits, queries scaled by query_pre_attn_scalar^-½, and a sliding window on alternate layers.
    /// The head is tied by default. llama.cpp's gemma2 graph uses NeoX rope: no row permutation
    /// (convert_hf_to_gguf.py's Gemma2Model only shifts the norm weights by one, and drops lm_head).
    static let gemma2 = Architecture.rotaryDecoder(
        modelType: "gemma2", classNames: ["Gemma2ForCausalLM"], layout: .gemma2, tiesEmbeddingsByDefault: true,
        configDefaults: .gemma(vocabSize: 256_000, maxPositionEmbeddings: 8192),
        llamaCpp: .gemma2,
        readConfig: { config, c in
            let g = c.reading(GemmaKey.self)
            try config.readGemmaAttention(c, g)
            config.rope = try ModelConfig.readRope(c, maxPositionEmbeddings: config.maxPositionEmbeddings)
            // Gemma2Config's defaults are 50 and 30; an explicit null switches each off.
            config.attentionSoftcap = try g.contains(.attnLogitSoftcapping) ? g.double(.attnLogitSoftcapping) : 50
            config.finalLogitSoftcap = try g.contains(.finalLogitSoftcapping) ? g.double(.finalLogitSoftcapping) : 30
            // Gemma2Config.__post_init__ alternates, (i + 1) % 2 != 0, and reads no pattern field.
            try config.readGemmaSlidingWindow(c, pattern: 2)
        })
}

extension LlamaCppNaming {
    /// Gemma2Model's file: the four norms as attn_norm, post_attention_norm, ffn_norm and
    /// post_ffw_norm, stored w + 1; the soft-caps and the window under their own keys (absent,
    /// llama.cpp takes 50, 30 and 4096, Gemma2Config's defaults); no rope base (10000, both
    /// sides' default); the sliding layers alternate as llama.cpp's default pattern 2 and
    /// Gemma2Config's __post_init__ both make them; no query_pre_attn_scalar (`queryScale`).
    static let gemma2 = LlamaCppNaming(
        architecture: "gemma2", permutesRotaryRows: false, modelTensors: llama.modelTensors,
        layerNorms: ["attn_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
                     "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm"],
        storesNormsPlusOne: true,
        configKeys: ["attn_logit_softcapping": "attn_logit_softcapping", "final_logit_softcapping": "final_logit_softcapping",
                     "attention.sliding_window": "sliding_window"],
        queryScale: LlamaCppQueryScale(hiddenPerHeadLayerCount: 46))
}

extension DecoderLayout {
    /// Gemma 2's layer: four norms, (1 + w) RMSNorms, scaled embeddings.
    static let gemma2 = DecoderLayout(
        preFeedForwardNorm: "pre_feedforward_layernorm", postAttentionNorm: "post_attention_layernorm",
        postFeedForwardNorm: "post_feedforward_layernorm", normsOffsetByOne: true, scalesEmbeddings: true)
}

/// config.json fields of Gemma 2 and Gemma 3 that other families lack.
enum GemmaKey: String {
    case queryPreAttnScalar = "query_pre_attn_scalar"
    case attnLogitSoftcapping = "attn_logit_softcapping", finalLogitSoftcapping = "final_logit_softcapping"
    case useBidirectionalAttention = "use_bidirectional_attention"
    case slidingWindowPattern = "sliding_window_pattern", ropeLocalBaseFreq = "rope_local_base_freq"
}

extension ConfigDefaults {
    /// Gemma2Config's and Gemma3TextConfig's shared defaults; the activation is serialized as
    /// `hidden_activation` (a `hidden_act` beside it, as Gemma 2 checkpoints have, is not read).
    static func gemma(vocabSize: Int, maxPositionEmbeddings: Int) -> ConfigDefaults {
        ConfigDefaults(vocabSize: vocabSize, hiddenSize: 2304, numLayers: 26, numAttentionHeads: 8,
                       intermediateSize: 9216, maxPositionEmbeddings: maxPositionEmbeddings,
                       activation: "gelu_pytorch_tanh", normEpsilon: 1e-6, activationKey: "hidden_activation")
    }
}

extension ModelConfig {
    /// Heads, head size, biases and query scale as Gemma's config classes default them: 4 key/value
    /// heads, head_dim 256 whatever hidden_size is, attention_bias on q/k/v/o (false),
    /// query_pre_attn_scalar 256. Bidirectional attention (an option of both classes for embedding
    /// models) is refused: the runtime is causal.
    mutating func readGemmaAttention(_ c: ConfigFields<Key>, _ g: ConfigFields<GemmaKey>) throws {
        guard numAttentionHeads > 0 else { throw RuntimeError.invalidConfig("num_attention_heads must be positive") }
        numKeyValueHeads = try c.int(.numKeyValueHeads) ?? 4
        headDim = try c.int(.headDim) ?? 256
        let attentionBias = try c.bool(.attentionBias) ?? false
        (queryKeyValueBias, attentionOutputBias) = (attentionBias, attentionBias)
        let scalar = try g.double(.queryPreAttnScalar) ?? 256
        guard scalar > 0 else { throw RuntimeError.invalidConfig("query_pre_attn_scalar must be positive, got \(scalar)") }
        attentionScale = pow(scalar, -0.5)  // query_pre_attn_scalar**-0.5, as Python evaluates it
        if try g.bool(.useBidirectionalAttention) ?? false {
            throw RuntimeError.unsupportedArchitecture("\(modelType) with use_bidirectional_attention=true")
        }
    }

    /// The sliding layers (`layer_types`, else every layer i with (i + 1) % pattern != 0; the pattern
    /// matters only then) and their window (default 4096). transformers cannot run sliding layers
    /// with a null window.
    mutating func readGemmaSlidingWindow(_ c: ConfigFields<Key>, pattern: Int) throws {
        if let listed = try ModelConfig.slidingLayers(c) {
            slidingWindowLayers = listed
        } else {
            guard pattern > 0 else { throw RuntimeError.invalidConfig("sliding_window_pattern must be positive, got \(pattern)") }
            slidingWindowLayers = Set((0..<numLayers).filter { ($0 + 1) % pattern != 0 })
        }
        slidingWindow = try c.contains(.slidingWindow) ? c.int(.slidingWindow) : 4096
        if slidingWindow == nil, !slidingWindowLayers.isEmpty {
            throw RuntimeError.invalidConfig("sliding_window is null but layer_types has sliding_attention layers")
        }
    }
}
