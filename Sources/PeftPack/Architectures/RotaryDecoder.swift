extension Architecture {
    /// A family that runs as `DecoderBody`: everything but its config reading and llama.cpp name
    /// follows from its layout.
    static func rotaryDecoder(
        modelType: String, classNames: [String], layout: DecoderLayout = .llama, tiesEmbeddingsByDefault: Bool = false,
        configDefaults: ConfigDefaults, llamaCpp: LlamaCppNaming?,
        readConfig: @escaping @Sendable (_ config: inout ModelConfig, _ fields: ConfigFields<ModelConfig.Key>) throws -> Void
    ) -> Architecture {
        Architecture(
            modelType: modelType, classNames: classNames, checkpointPrefix: "model", layerPath: layout.layerPath,
            layerModules: layout.linearModules.map { suffix in
                LayerModule(suffix, llamaCpp: DecoderLayout.llamaCppNames[suffix], rotaryRows: DecoderLayout.rotaryRows[suffix])
            },
            tokenEmbedding: layout.tokenEmbedding, outputHead: layout.outputHead,
            layerNorms: layout.layerNorms, modelNorms: [layout.finalNorm],
            buffers: ["rotary_emb.inv_freq"], tiesEmbeddingsByDefault: tiesEmbeddingsByDefault,
            configDefaults: configDefaults, llamaCpp: llamaCpp,
            adapterHub: AdapterHubPoints(afterAttention: ["attention_adapters"], afterFeedForward: ["output_adapters"]),
            readConfig: readConfig,
            makeBody: { config, builder in try DecoderBody(config: config, layout: layout, builder: &builder) })
    }
}

extension DecoderLayout {
    /// llama.cpp's names of the decoder projections (gguf-py's TensorNameMap: attn_q … ffn_down;
    /// Phi-3's fused projections keep their fusion as attn_qkv and ffn_up).
    static let llamaCppNames: [String: String] = [
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "self_attn.qkv_proj": "attn_qkv",
        "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "mlp.gate_up_proj": "ffn_up",
    ]

    /// The projections whose output rows are rotary heads.
    static let rotaryRows: [String: RotaryRows] = ["self_attn.q_proj": .queryHeads, "self_attn.k_proj": .keyValueHeads]
}
