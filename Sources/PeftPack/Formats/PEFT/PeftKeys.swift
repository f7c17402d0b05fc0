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

    /// LoHa's and LoKr's saved-key suffixes (tuners/loha, tuners/lokr: ParameterDicts saved
    /// without the adapter name) and their roles.
    static let lohaSuffixes: [(suffix: String, role: String)] = [
        (".hada_w1_a", TensorRole.hadamardW1A), (".hada_w1_b", TensorRole.hadamardW1B),
        (".hada_w2_a", TensorRole.hadamardW2A), (".hada_w2_b", TensorRole.hadamardW2B),
    ]
    static let lokrSuffixes: [(suffix: String, role: String)] = [
        (".lokr_w1", TensorRole.kroneckerW1), (".lokr_w1_a", TensorRole.kroneckerW1A), (".lokr_w1_b", TensorRole.kroneckerW1B),
        (".lokr_w2", TensorRole.kroneckerW2), (".lokr_w2_a", TensorRole.kroneckerW2A), (".lokr_w2_b", TensorRole.kroneckerW2B),
    ]
    /// AdaLoRA's (tuners/adalora: ParameterDicts, saved without `.weight`).
    static let adaLoRASuffixes: [(suffix: String, role: String)] = [
        (".lora_A", TensorRole.loraA), (".lora_B", TensorRole.loraB), (".lora_E", TensorRole.singularValues),
    ]
    /// VeRA's per-module vectors, and its shared projections, saved once outside the model
    /// (`base_model.vera_A`, `base_model.vera_B`) when save_projection is true.
    static let veraSuffixes: [(suffix: String, role: String)] = [
        (".vera_lambda_b", TensorRole.veraLambdaB), (".vera_lambda_d", TensorRole.veraLambdaD),
    ]
    static let veraShared: [(key: String, role: String)] = [("base_model.vera_A", TensorRole.loraA), ("base_model.vera_B", TensorRole.loraB)]
    /// The CP-decomposed convolution cores of `use_effective_conv2d`, for Conv layers only.
    static let convolutionCoreSuffixes = [".hada_t1", ".hada_t2", ".lokr_t2"]

    /// The saved-key suffixes of an adapter kind's own factors.
    static func factorSuffixes(of kind: AdapterKind) -> [(suffix: String, role: String, layout: WeightLayout?)] {
        switch kind {
        case .loha: lohaSuffixes.map { ($0.suffix, $0.role, nil) }
        case .lokr: lokrSuffixes.map { ($0.suffix, $0.role, nil) }
        case .adalora: adaLoRASuffixes.map { ($0.suffix, $0.role, nil) }
        case .vera: veraSuffixes.map { ($0.suffix, $0.role, nil) }
        default: loraSuffixes
        }
    }

    /// The saved key of a LoHa or LoKr module's factor; nil for other kinds.
    static func factorKey(target: String, role: String, change: ModuleChange) -> String? {
        let table: [(suffix: String, role: String)]
        switch change {
        case .loha: table = lohaSuffixes
        case .lokr: table = lokrSuffixes
        case .adalora: table = adaLoRASuffixes
        case .vera:
            if let shared = veraShared.first(where: { $0.role == role }) { return shared.key }
            table = veraSuffixes
        default: return nil
        }
        return table.first { $0.role == role }.map { modelPrefix + target + $0.suffix }
    }

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
