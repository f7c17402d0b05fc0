extension Architecture {
    /// Phi3ForCausalLM (Phi-3, Phi-3.5-mini, Phi-4-mini): Llama's computation with q | k | v fused
    /// in self_attn.qkv_proj and gate | up in mlp.gate_up_proj, no biases, LongRoPE, a partial
    /// rotary factor (Phi-4-mini rotates 3/4 of each head) and an optional sliding window on every
    /// layer. llama.cpp keeps both fusions (attn_qkv, ffn_up) and its phi3 graph uses NeoX rope,
    /// so its converter permutes no rows. LongRoPE goes into rope_factors_long/short tensors,
    /// which peftpack does not read from GGUF yet; a sliding window is written but llama.cpp's
    /// phi3 graph disables it (llama_model_phi3::load_arch_hparams), so it is not read.
    static let phi3 = Architecture.rotaryDecoder(
        modelType: "phi3", classNames: ["Phi3ForCausalLM", "Phi3ForSequenceClassification"], layout: .phi3,
        configDefaults: ConfigDefaults(vocabSize: 32064, hiddenSize: 3072, numLayers: 32, numAttentionHeads: 32,
                                       intermediateSize: 8192, maxPositionEmbeddings: 4096, normEpsilon: 1e-5),
        llamaCpp: .phi3,
        readConfig: { config, c in
            try config.readAttentionShape(c)
            config.rope = try phi3Rope(c, maxPositionEmbeddings: config.maxPositionEmbeddings)
            config.slidingWindow = try c.int(.slidingWindow)
            if config.slidingWindow != nil { config.slidingWindowLayers = Set(0..<config.numLayers) }
        })

    /// Phi3Config's rope: only default and longrope (its validate_rope), "yarn" read as longrope
    /// (its backward compatibility), and for longrope the top-level original_max_position_embeddings
    /// (default 4096) over the dictionary's, as standardize_rope_params gives it priority.
    private static func phi3Rope(_ c: ConfigFields<ModelConfig.Key>, maxPositionEmbeddings: Int) throws -> RopeParameters {
        var rope = try ModelConfig.readRope(c, maxPositionEmbeddings: maxPositionEmbeddings)
        if rope.type == .yarn { rope.type = .longrope }
        guard [.standard, .longrope].contains(rope.type) else {
            throw RuntimeError.invalidConfig("rope type \(rope.type.rawValue) is not one Phi3Config accepts (default, longrope)")
        }
        if rope.type == .longrope {
            rope.originalMaxPositionEmbeddings = try c.reading(Phi3Key.self).int(.originalMaxPositionEmbeddings) ?? 4096
        }
        return rope
    }

    private enum Phi3Key: String {
        case originalMaxPositionEmbeddings = "original_max_position_embeddings"
    }
}

extension DecoderLayout {
    static let phi3 = DecoderLayout(
        attention: .fused("self_attn.qkv_proj"), feedForward: .fusedGated("mlp.gate_up_proj"), rotatesPartialHeads: true)
}

extension LlamaCppNaming {
    /// Phi3MiniModel's file: Llama's names with the fusions kept (attn_qkv, ffn_up holding
    /// gate | up in transformers' order, which llama.cpp's SwiGLU splits alike) and
    /// rope.dimension_count for the partial rotary factor.
    static let phi3: LlamaCppNaming = {
        var naming = LlamaCppNaming.llamaTensors(architecture: "phi3")
        naming.rotatesPartialHeads = true
        return naming
    }()
}
