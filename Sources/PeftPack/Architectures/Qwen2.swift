extension Architecture {
    /// Qwen2ForCausalLM (Qwen 2 and 2.5): Llama's layers with biases on q, k and v only, and an
    /// optional sliding window on the layers from `max_window_layers` on (or as `layer_types`
    /// lists). llama.cpp's qwen2 graph uses NeoX rope: no row permutation.
    static let qwen2 = Architecture.rotaryDecoder(
        modelType: "qwen2", classNames: ["Qwen2ForCausalLM", "Qwen2ForSequenceClassification"],
        configDefaults: ConfigDefaults(vocabSize: 151936, intermediateSize: 22016, maxPositionEmbeddings: 32768),
        llamaCpp: LlamaCppNaming(architecture: "qwen2", permutesRotaryRows: false),
        readConfig: { config, c in
            try config.readAttentionShape(c)
            (config.queryKeyValueBias, config.attentionOutputBias, config.mlpBias) = (true, false, false)
            config.rope = try ModelConfig.readRope(c, maxPositionEmbeddings: config.maxPositionEmbeddings)
            let q = c.reading(Qwen2Key.self)
            guard try q.bool(.useSlidingWindow) ?? false else { return }
            config.slidingWindow = try c.int(.slidingWindow) ?? 4096
            if let listed = try ModelConfig.slidingLayers(c) {
                config.slidingWindowLayers = listed
            } else {
                let firstSliding = try q.int(.maxWindowLayers) ?? 28
                config.slidingWindowLayers = Set(config.numLayers > firstSliding ? Array(firstSliding..<config.numLayers) : [])
            }
        })

    private enum Qwen2Key: String {
        case useSlidingWindow = "use_sliding_window", maxWindowLayers = "max_window_layers"
    }
}
