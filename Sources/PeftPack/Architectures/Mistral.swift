extension Architecture {
    /// MistralForCausalLM: Llama's layers without biases, with a sliding window on every layer
    /// (MistralConfig defaults to 4096; an explicit null disables it). llama.cpp converts it as
    /// a Llama model (q/k rows permuted) and writes no window, which llama.cpp's llama graph lacks:
    /// a Mistral GGUF reads as the Llama model llama.cpp runs (through `LlamaCppNaming.llama`).
    static let mistral = Architecture.rotaryDecoder(
        modelType: "mistral", classNames: ["MistralForCausalLM", "MistralForSequenceClassification"],
        configDefaults: ConfigDefaults(intermediateSize: 14336, maxPositionEmbeddings: 4096 * 32),
        llamaCpp: LlamaCppNaming(architecture: "llama", permutesRotaryRows: true),
        readConfig: { config, c in
            try config.readAttentionShape(c, defaultKeyValueHeads: 8)
            config.rope = try ModelConfig.readRope(c, maxPositionEmbeddings: config.maxPositionEmbeddings)
            config.slidingWindow = try c.contains(.slidingWindow) ? c.int(.slidingWindow) : 4096
            if config.slidingWindow != nil { config.slidingWindowLayers = Set(0..<config.numLayers) }
        })
}
