/// How PEFT names saved tensors: `base_model.model.<module path>.<suffix>`.
enum PeftKeys {
    static let modelPrefix = "base_model.model."
    static let promptEmbeddings = "prompt_embeddings"
    /// TrainableTokensWrapper's saved key after the module path (`trainable_token_indices`).
    static let trainableTokensSuffix = ".token_adapter.trainable_tokens_delta"
    /// The LoRA/IA3 layer's own copy of the wrapped weight (`<module>.base_layer.weight`).
    static let baseLayerInfix = ".base_layer."

    /// Saved-key suffixes and the pack role each becomes, most specific first.
    static let loraSuffixes: [(suffix: String, role: String, layout: WeightLayout?)] = [
        (".lora_A.weight", TensorRole.loraA, nil),
        (".lora_B.weight", TensorRole.loraB, nil),
        (".lora_B.bias", TensorRole.loraBBias, nil),
        (".lora_embedding_A", TensorRole.loraA, .embedding),
        (".lora_embedding_B", TensorRole.loraB, .embedding),
        (".lora_magnitude_vector.weight", TensorRole.magnitude, nil),
        (".lora_magnitude_vector", TensorRole.magnitude, nil),
        (".base_layer.bias", TensorRole.targetBias, nil),
        (".ia3_l", TensorRole.ia3Vector, nil),
    ]

    /// The saved key PEFT uses for a role of a module, the inverse of `loraSuffixes`.
    static func key(target: String, role: String, layout: WeightLayout?, magnitudeSuffix: String = ".lora_magnitude_vector") -> String {
        let suffix: String
        switch role {
        case TensorRole.loraA: suffix = layout == .embedding ? ".lora_embedding_A" : ".lora_A.weight"
        case TensorRole.loraB: suffix = layout == .embedding ? ".lora_embedding_B" : ".lora_B.weight"
        case TensorRole.loraBBias: suffix = ".lora_B.bias"
        case TensorRole.magnitude: suffix = magnitudeSuffix
        case TensorRole.targetBias: suffix = ".base_layer.bias"
        case TensorRole.ia3Vector: suffix = ".ia3_l"
        default: suffix = "." + role
        }
        return modelPrefix + target + suffix
    }
}
