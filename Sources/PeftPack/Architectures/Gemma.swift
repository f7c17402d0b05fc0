extension Architecture {
    /// GemmaForCausalLM (Gemma 1): Llama's layers with GeGLU (`hidden_act`, whose legacy "gelu"
    /// transformers reads as the tanh approximation), (1 + w) RMSNorm, input embeddings scaled by
    /// √hidden_size, head_dim 256 by default and a tied head. llama.cpp's converter (GemmaModel)
    /// writes Llama's tensor names with every norm weight stored as w + 1, drops lm_head (its
    /// graph always ties the head) and writes no rope base (llama.cpp's default 10000, as
    /// GemmaConfig's).
    static let gemma = Architecture.rotaryDecoder(
        modelType: "gemma", classNames: ["GemmaForCausalLM", "GemmaForSequenceClassification"],
        layout: DecoderLayout(normsOffsetByOne: true, scalesEmbeddings: true), tiesEmbeddingsByDefault: true,
        configDefaults: ConfigDefaults(vocabSize: 256000, hiddenSize: 3072, numLayers: 28, numAttentionHeads: 16,
                                       intermediateSize: 24576, maxPositionEmbeddings: 8192, activation: "gelu_pytorch_tanh"),
        llamaCpp: .gemma,
        readConfig: { config, c in
            try config.readAttentionShape(c, defaultKeyValueHeads: 16)
            config.headDim = try c.int(.headDim) ?? 256
            if config.activation == "gelu" { config.activation = "gelu_pytorch_tanh" }
            let attentionBias = try c.bool(.attentionBias) ?? false
            (config.queryKeyValueBias, config.attentionOutputBias) = (attentionBias, attentionBias)
            config.rope = try ModelConfig.readRope(c, maxPositionEmbeddings: config.maxPositionEmbeddings)
        })
}

extension LlamaCppNaming {
    static let gemma: LlamaCppNaming = {
        var naming = LlamaCppNaming.llamaTensors(architecture: "gemma")
        naming.storesNormsPlusOne = true
        return naming
    }()
}
