extension Architecture {
    /// Gemma3ForCausalLM, model_type "gemma3_text" (transformers' modeling_gemma3; the text-only
    /// checkpoints such as gemma-3-1b): Gemma 2's layer plus a (1 + w) RMSNorm over each query and
    /// key head before rope, two rotary tables (the sliding layers' local base, the full layers'
    /// global base and scaling), several sliding layers per full one (layer_types, or
    /// sliding_window_pattern, default 6) and no attention soft-capping: Gemma3TextConfig keeps
    /// attn_logit_softcapping but Gemma3Attention never passes it on, so it is not read. The head
    /// is tied by default. llama.cpp's gemma3 graph uses NeoX rope: no row permutation.
    /// (convert_hf_to_gguf.py's Gemma3Model shifts the norm weights by one and trims token_embd to
    /// the tokenizer's vocabulary.)
    static let gemma3 = Architecture.rotaryDecoder(
        modelType: "gemma3_text", classNames: ["Gemma3ForCausalLM"], layout: .gemma3, tiesEmbeddingsByDefault: true,
        configDefaults: .gemma(vocabSize: 262_208, maxPositionEmbeddings: 131_072),
        llamaCpp: .gemma3,
        readConfig: { config, c in
            let g = c.reading(GemmaKey.self)
            try config.readGemmaAttention(c, g)
            (config.rope, config.slidingRope) = try ModelConfig.readGemma3Rope(c, g, maxPositionEmbeddings: config.maxPositionEmbeddings)
            config.finalLogitSoftcap = try g.double(.finalLogitSoftcapping)
            // 4.x configs give the pattern (Gemma3TextConfig reads it from kwargs, default 6).
            try config.readGemmaSlidingWindow(c, pattern: try g.int(.slidingWindowPattern) ?? 6)
        })
}

extension LlamaCppNaming {
    /// Gemma3Model's file: Gemma 2's names plus attn_q_norm / attn_k_norm, every norm stored
    /// w + 1; rope.freq_base for the full layers (with a linear rope.scaling, theirs alone in
    /// llama.cpp as in transformers) and rope.freq_base_swa for the sliding ones (absent, 10000 on
    /// both sides); the window only when attention.sliding_window is given, on five layers of six
    /// (llama.cpp's default pattern 6, Gemma3TextConfig's default sliding_window_pattern); the
    /// final soft-cap when set; no query_pre_attn_scalar (`queryScale`: the 62-layer 27B's is
    /// hidden / heads).
    static let gemma3 = LlamaCppNaming(
        architecture: "gemma3", permutesRotaryRows: false, modelTensors: gemma2.modelTensors,
        layerNorms: gemma2.layerNorms!.merging(["attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"]) { $1 },
        storesNormsPlusOne: true,
        configKeys: ["final_logit_softcapping": "final_logit_softcapping", "attention.sliding_window": "sliding_window",
                     "rope.freq_base_swa": "rope_local_base_freq"],
        queryScale: LlamaCppQueryScale(hiddenPerHeadLayerCount: 62), slidesOnlyWithWindowKey: true)
}

extension DecoderLayout {
    /// Gemma 2's layer with q_norm and k_norm.
    static let gemma3 = DecoderLayout(
        preFeedForwardNorm: "pre_feedforward_layernorm", postAttentionNorm: "post_attention_layernorm",
        postFeedForwardNorm: "post_feedforward_layernorm", queryNorm: "self_attn.q_norm", keyNorm: "self_attn.k_norm",
        normsOffsetByOne: true, scalesEmbeddings: true)
}

extension ModelConfig {
    private enum LayerTypeKey: String {
        case fullAttention = "full_attention", slidingAttention = "sliding_attention"
    }

    /// The full and the sliding layers' rope as Gemma3TextConfig.convert_rope_params_to_dict builds
    /// them: `rope_parameters` per layer type (a flat one is ignored: both types keep their
    /// defaults); a 4.x `rope_scaling` merged into the full layers' dictionary, which already says
    /// rope_type "default", so an old `type` key there changes nothing; each type's missing
    /// rope_theta from `rope_theta` (full, default 1e6) or `rope_local_base_freq` (sliding, 1e4).
    static func readGemma3Rope(_ c: ConfigFields<Key>, _ g: ConfigFields<GemmaKey>, maxPositionEmbeddings: Int) throws
        -> (full: RopeParameters, sliding: RopeParameters)
    {
        let perType = try c.object(.ropeParameters, keys: LayerTypeKey.self)
        func layerType(_ key: LayerTypeKey) throws -> RopeParameters {
            try perType?.object(key, keys: RopeParameters.Key.self).map(RopeParameters.init(fields:)) ?? RopeParameters()
        }
        var full = try layerType(.fullAttention), sliding = try layerType(.slidingAttention)
        if let scaling = try c.object(.ropeScaling, keys: RopeParameters.Key.self) {
            full = try RopeParameters(fields: scaling).overlaid(on: full, keepingType: !scaling.contains(.ropeType))
        }
        let partial = try c.double(.partialRotaryFactor)
        func complete(_ rope: inout RopeParameters, theta: Double) {
            rope.theta = rope.theta ?? theta
            rope.partialRotaryFactor = rope.partialRotaryFactor ?? partial
            if rope.originalMaxPositionEmbeddings == nil, [.llama3, .yarn].contains(rope.type) {
                rope.originalMaxPositionEmbeddings = maxPositionEmbeddings
            }
        }
        complete(&full, theta: try c.double(.ropeTheta) ?? 1_000_000)
        complete(&sliding, theta: try g.double(.ropeLocalBaseFreq) ?? 10_000)
        return (full, sliding)
    }
}

extension RopeParameters {
    /// `base.update(self)` of two rope dictionaries: every field set here wins, the type too
    /// unless it only came from an old `type` key, which `update` leaves beside base's rope_type.
    func overlaid(on base: RopeParameters, keepingType: Bool) -> RopeParameters {
        var result = self
        if keepingType { result.type = base.type }
        let numbers: [WritableKeyPath<RopeParameters, Double?>] = [
            \.theta, \.factor, \.lowFreqFactor, \.highFreqFactor, \.attentionFactor, \.betaFast, \.betaSlow,
            \.mscale, \.mscaleAllDim, \.partialRotaryFactor,
        ]
        for field in numbers where result[keyPath: field] == nil { result[keyPath: field] = base[keyPath: field] }
        result.originalMaxPositionEmbeddings = originalMaxPositionEmbeddings ?? base.originalMaxPositionEmbeddings
        result.truncate = truncate ?? base.truncate
        return result
    }
}
