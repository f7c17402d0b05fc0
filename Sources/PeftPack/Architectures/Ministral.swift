extension Architecture {
    /// MinistralForCausalLM: Mistral's layers and config, with the sliding window on the layers
    /// `layer_types` lists as "sliding_attention" (MinistralConfig fills the list: every layer
    /// while `sliding_window` is set, which defaults to 4096). llama.cpp's converter has no
    /// Ministral class, so there is no GGUF naming.
    static let ministral = Architecture.rotaryDecoder(
        modelType: "ministral", classNames: ["MinistralForCausalLM", "MinistralForSequenceClassification"],
        configDefaults: ConfigDefaults(intermediateSize: 14336, maxPositionEmbeddings: 4096 * 32),
        llamaCpp: nil,
        readConfig: { config, c in
            try config.readAttentionShape(c, defaultKeyValueHeads: 8)
            config.rope = try ModelConfig.readRope(c, maxPositionEmbeddings: config.maxPositionEmbeddings)
            config.slidingWindow = try c.contains(.slidingWindow) ? c.int(.slidingWindow) : 4096
            let everyLayer = config.slidingWindow == nil ? [] : Set(0..<config.numLayers)
            config.slidingWindowLayers = try ModelConfig.slidingLayers(c) ?? everyLayer
        })
}
