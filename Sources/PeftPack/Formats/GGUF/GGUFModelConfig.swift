import Foundation

/// A llama.cpp model's config from its GGUF metadata (the keys convert_hf_to_gguf.py writes under
/// `<architecture>.`), spelled as the config.json transformers would hold and decoded by the same
/// reader as every config.json, so its defaults and checks apply unchanged.
enum GGUFModelConfig {
    /// What the metadata does not say but the tensors do.
    struct TensorFacts {
        var vocabSize: Int
        /// No `output` tensor: llama.cpp then reuses token_embd as the head.
        var tiedHead: Bool
        var attentionBias: Bool
        var mlpBias: Bool
    }

    static func read(_ file: GGUF.File, family: Architecture, architecture: String, facts: TensorFacts) throws -> (config: ModelConfig, text: String) {
        func fail(_ problem: String) -> InputError { InputError(file: file.path, problem: problem) }
        func integer(_ key: String) throws -> Int? {
            guard let value = file.value("\(architecture).\(key)") else { return nil }
            guard let number = value.integerValue, number > 0 else { throw fail("has \(architecture).\(key) = \(value), not a positive integer") }
            return number
        }
        func required(_ key: String, _ meaning: String) throws -> Int {
            guard let number = try integer(key) else { throw fail("has no \(architecture).\(key) (\(meaning))") }
            return number
        }
        func real(_ key: String) throws -> Double? {
            guard let value = file.value("\(architecture).\(key)") else { return nil }
            // The shortest decimal that reads back as the stored fp32 (1e-06, not 9.99999997e-07):
            // what the converter was given, and what transformers' config would hold.
            guard case .float32(let float) = value, float.isFinite, let decimal = Double("\(float)") else {
                throw fail("has \(architecture).\(key) = \(value), not a finite float32")
            }
            return decimal
        }
        let ropeScaling = try linearRopeScaling(file, architecture: architecture, real: real)
        if file.value("\(architecture).attention.sliding_window_pattern") != nil {
            throw fail("gives \(architecture).attention.sliding_window_pattern, which peftpack does not read from GGUF yet")
        }
        let hidden = try required("embedding_length", "the hidden size")
        let layers = try required("block_count", "the layer count")
        let heads = try required("attention.head_count", "the attention head count")
        let headDim = try integer("attention.key_length") ?? hidden / heads
        if let valueLength = try integer("attention.value_length"), valueLength != headDim {
            throw fail("has value heads of \(valueLength) but key heads of \(headDim); a \(architecture) model has one head size")
        }
        guard let naming = family.llamaCpp else { preconditionFailure("a GGUF family has llama.cpp naming") }
        var partialRotaryFactor: Double?
        if let rotary = try integer("rope.dimension_count"), rotary != headDim {
            // transformers rotates int(head_dim · partial_rotary_factor) dimensions: the factor
            // must give back exactly the file's count.
            let factor = Double(rotary) / Double(headDim)
            guard naming.rotatesPartialHeads, rotary < headDim, Int(Double(headDim) * factor) == rotary else {
                throw fail("rotates \(rotary) of each head's \(headDim) dimensions; a \(architecture) model rotates them all")
            }
            partialRotaryFactor = factor
        }
        if let declared = try integer("vocab_size"), declared != facts.vocabSize {
            throw fail("declares \(architecture).vocab_size \(declared) but token_embd has \(facts.vocabSize) rows")
        }
        var fields: [String: Any] = [
            "model_type": family.modelType,
            "architectures": [family.classNames[0]],
            "vocab_size": facts.vocabSize,
            "hidden_size": hidden,
            "num_hidden_layers": layers,
            "intermediate_size": try required("feed_forward_length", "the feed-forward size"),
            "num_attention_heads": heads,
            "num_key_value_heads": try integer("attention.head_count_kv") ?? heads,
            "head_dim": headDim,
            "tie_word_embeddings": facts.tiedHead,
            "attention_bias": facts.attentionBias,
            "mlp_bias": facts.mlpBias,
        ]
        fields["max_position_embeddings"] = try integer("context_length")
        fields["rms_norm_eps"] = try real("attention.layer_norm_rms_epsilon")
        // llama.cpp's default when the converter writes none (GemmaModel, Gemma2Model).
        fields["rope_theta"] = try real("rope.freq_base") ?? 10_000
        fields["rope_scaling"] = ropeScaling
        fields["partial_rotary_factor"] = partialRotaryFactor
        let windowKey = "attention.sliding_window"
        let windowless = naming.slidesOnlyWithWindowKey && (file.value("\(architecture).\(windowKey)")?.integerValue ?? 0) == 0
        if windowless { fields["layer_types"] = Array(repeating: "full_attention", count: layers) }
        for (key, field) in naming.configKeys where !(windowless && key == windowKey) {
            guard let value = file.value("\(architecture).\(key)") else { continue }
            if case .float32 = value { fields[field] = try real(key) } else { fields[field] = try integer(key) }
        }
        if let scale = naming.queryScale {
            fields["query_pre_attn_scalar"] = scale.queryPreAttentionScalar(layers: layers, hidden: hidden, heads: heads, headDim: headDim)
        }
        let json = try JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys, .prettyPrinted])
        do {
            return (try ModelConfig.decode(json), String(decoding: json, as: UTF8.self) + "\n")
        } catch let error as RuntimeError {
            throw fail("has metadata that makes no valid \(family.classNames[0]) config: \(error)")
        }
    }

    /// rope_scaling as transformers spells linear scaling (llama.cpp: positions × 1 / factor, on
    /// Gemma 3's full layers only, as Gemma3TextConfig applies it); any other kind is refused.
    private static func linearRopeScaling(_ file: GGUF.File, architecture: String, real: (String) throws -> Double?) throws -> [String: Any]? {
        let type = file.value("\(architecture).rope.scaling.type")?.stringValue ?? "none"
        let factor = try real("rope.scaling.factor")
        switch type {
        case "none":
            guard factor == nil else { throw InputError(file: file.path, problem: "gives \(architecture).rope.scaling.factor without a rope.scaling.type") }
            return nil
        case "linear":
            guard let factor else { throw InputError(file: file.path, problem: "uses linear rope scaling without \(architecture).rope.scaling.factor") }
            return ["rope_type": "linear", "factor": factor]
        default:
            throw InputError(file: file.path, problem: "uses \(type) rope scaling, which peftpack does not read from GGUF yet")
        }
    }
}

extension GGUF.Value {
    /// An integer of any of GGUF's integer types, when it fits an Int.
    var integerValue: Int? {
        switch self {
        case .uint16(let value): Int(value)
        case .uint32(let value): Int(value)
        case .int32(let value): Int(value)
        case .uint64(let value): Int(exactly: value)
        default: nil
        }
    }
}
