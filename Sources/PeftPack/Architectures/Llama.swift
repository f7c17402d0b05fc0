extension Architecture {
    /// LlamaForCausalLM (Llama 2 and 3): pre-RMSNorm decoder layers with rotary positions,
    /// grouped-query attention and a SwiGLU feed-forward block; optional biases (attention_bias,
    /// mlp_bias). llama.cpp's converter permutes q/k rows (LlamaModel.permute).
    static let llama = Architecture.rotaryDecoder(
        modelType: "llama", classNames: ["LlamaForCausalLM", "LlamaForSequenceClassification"],
        configDefaults: ConfigDefaults(),
        llamaCpp: .llama,
        readConfig: { config, c in
            try config.readAttentionShape(c)
            let attentionBias = try c.bool(.attentionBias) ?? false
            (config.queryKeyValueBias, config.attentionOutputBias) = (attentionBias, attentionBias)
            config.mlpBias = try c.bool(.mlpBias) ?? false
            config.rope = try ModelConfig.readRope(c, maxPositionEmbeddings: config.maxPositionEmbeddings)
        })
}
