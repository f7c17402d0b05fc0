extension Architecture {
    /// Qwen2ForCausalLM (Qwen 2 and 2.5): Llama's layers with biases on q, k and v only, and an
    /// optional sliding window on the layers from `max_window_layers` on (or as `layer_types`
    /// lists). llama.cpp's qwen2 graph uses NeoX rope: no row permutation; Qwen2Model writes
    /// Llama's tensor names and the generic metadata (no sliding window: llama.cpp's graph has none).
    static let qwen2 = Architecture.rotaryDecoder(
        modelType: "qwen2", classNames: ["Qwen2ForCausalLM", "Qwen2ForSequenceClassification"],
        configDefaults: ConfigDefaults(vocabSize: 151936, intermediateSize: 22016, maxPositionEmbeddings: 32768),
        llamaCpp: .llamaTensors(architecture: "qwen2"),
        readConfig: { config, c in
            try config.readAttentionShape(c)
            (config.queryKeyValueBias, config.attentionOutputBias, config.mlpBias) = (true, false, false)
            config.rope = try ModelConfig.readRope(c, maxPositionEmbeddings: config.maxPositionEmbeddings)
            try config.readQwenSlidingWindow(c)
        })
}

extension ModelConfig {
    /// Qwen2Config's and Qwen3Config's window (the same __post_init__): off unless
    /// use_sliding_window, then on the layers `layer_types` lists or from `max_window_layers` on.
    mutating func readQwenSlidingWindow(_ c: ConfigFields<Key>) throws {
        let q = c.reading(QwenKey.self)
        guard try q.bool(.useSlidingWindow) ?? false else { return }
        slidingWindow = try c.int(.slidingWindow) ?? 4096
        if let listed = try ModelConfig.slidingLayers(c) {
            slidingWindowLayers = listed
        } else {
            let firstSliding = try q.int(.maxWindowLayers) ?? 28
            slidingWindowLayers = Set(numLayers > firstSliding ? Array(firstSliding..<numLayers) : [])
        }
    }

    private enum QwenKey: String {
        case useSlidingWindow = "use_sliding_window", maxWindowLayers = "max_window_layers"
    }
}
