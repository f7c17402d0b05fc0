extension Architecture {
    /// OpenAIGPTLMHeadModel (GPT-1): GPT-2's Conv1D blocks, post-LayerNorm and no final norm.
    /// peftpack knows its checkpoint layout, so imports and merges store its weights correctly, but
    /// does not run it.
    static let openAIGPT = Architecture(
        modelType: "openai-gpt", classNames: ["OpenAIGPTLMHeadModel", "OpenAIGPTModel"],
        checkpointPrefix: "transformer", layerPath: "h",
        layerModules: [
            LayerModule("attn.c_attn", layout: .conv1d), LayerModule("attn.c_proj", layout: .conv1d),
            LayerModule("mlp.c_fc", layout: .conv1d), LayerModule("mlp.c_proj", layout: .conv1d),
        ],
        tokenEmbedding: "tokens_embed", otherEmbeddings: ["positions_embed"], outputHead: "lm_head",
        layerNorms: ["ln_1", "ln_2"], modelNorms: [], buffers: ["position_ids"],
        tiesEmbeddingsByDefault: true,
        configDefaults: ConfigDefaults(vocabSize: 40478, hiddenSize: 768, numLayers: 12, numAttentionHeads: 12,
                                       maxPositionEmbeddings: 512, activation: "gelu", normEpsilon: 1e-5,
                                       activationKey: "afn", epsilonKey: "layer_norm_epsilon"),
        llamaCpp: nil, adapterHub: .none,
        readConfig: { _, _ in },
        makeBody: { config, _ in
            throw RuntimeError.unsupportedArchitecture("model_type \(config.modelType) (its layout is known for import and merge, but peftpack does not run it)")
        })
}
