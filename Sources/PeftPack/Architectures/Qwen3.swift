extension Architecture {
    /// Qwen3ForCausalLM: Qwen2's layers without biases (attention_bias, default false, covers q,
    /// k, v and o alike), with a per-head RMSNorm over head_dim on queries and keys before rope
    /// (self_attn.q_norm / k_norm), and head_dim its own field (Qwen3Config default 128, not
    /// hidden / heads). The small models tie the head to the embedding in their config; the config
    /// class does not. Sliding window as Qwen2. llama.cpp's qwen3 graph uses NeoX rope: no row
    /// permutation (convert_hf_to_gguf.py's Qwen3Model derives from Qwen2Model); the q/k norms are
    /// attn_q_norm / attn_k_norm.
    static let qwen3 = Architecture.rotaryDecoder(
        modelType: "qwen3", classNames: ["Qwen3ForCausalLM", "Qwen3ForSequenceClassification"],
        layout: DecoderLayout(queryNorm: "self_attn.q_norm", keyNorm: "self_attn.k_norm"),
        configDefaults: ConfigDefaults(vocabSize: 151936, intermediateSize: 22016, maxPositionEmbeddings: 32768),
        llamaCpp: .qwen3,
        readConfig: { config, c in
            try config.readAttentionShape(c, defaultKeyValueHeads: 32, defaultHeadDim: 128)
            let attentionBias = try c.bool(.attentionBias) ?? false
            (config.queryKeyValueBias, config.attentionOutputBias) = (attentionBias, attentionBias)
            config.rope = try ModelConfig.readRope(c, maxPositionEmbeddings: config.maxPositionEmbeddings)
            try config.readQwenSlidingWindow(c)
        })
}

extension LlamaCppNaming {
    static let qwen3: LlamaCppNaming = {
        var naming = LlamaCppNaming.llamaTensors(architecture: "qwen3")
        naming.layerNorms?["attn_q_norm"] = "self_attn.q_norm"
        naming.layerNorms?["attn_k_norm"] = "self_attn.k_norm"
        return naming
    }()
}
