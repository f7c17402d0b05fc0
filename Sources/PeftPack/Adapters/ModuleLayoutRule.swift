/// The layout PEFT gives a module it adapts. PEFT decides it per module from the module's type
/// (lora/model.py `_create_new_module`): a transformers Conv1D runs with fan_in_fan_out, an
/// nn.Linear without, whatever adapter_config.json says (the saved value is whatever the last
/// module visited left there). Every consumer of `AdapterModule.layout` goes through this rule.
public enum ModuleLayoutRule {
    /// Model types whose blocks are transformers Conv1D layers.
    static let conv1dModelTypes: Set<String> = ["gpt2", "openai-gpt"]
    /// The Conv1D modules of a GPT-2 / OpenAI-GPT block (q_attn: GPT-2's cross-attention).
    static let conv1dModules: Set<String> = ["attn.c_attn", "attn.q_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]

    /// The layout of the weight module `target`. `modelType` is the base's config.json
    /// `model_type`, nil when no base is at hand: then GPT-2-style names are taken as Conv1D,
    /// as they are in GPT-2 and OpenAI-GPT (gpt_bigcode and Qwen use nn.Linear under the same
    /// names, which is why a known base decides).
    public static func layout(of target: String, modelType: String?) -> WeightLayout {
        if let modelType, !conv1dModelTypes.contains(modelType) { return .linear }
        let parts = target.split(separator: ".")
        guard parts.count >= 3, Int(parts[parts.count - 3]) != nil else { return .linear }
        return conv1dModules.contains(parts.suffix(2).joined(separator: ".")) ? .conv1d : .linear
    }

    /// `adapter` with each weight module's layout set by the rule: embeddings (known from their
    /// saved keys) and whole-tensor modules stay as they are.
    public static func correcting(_ adapter: Adapter, modelType: String?) -> Adapter {
        var corrected = adapter
        corrected.modules = adapter.modules.map { module in
            guard let current = module.layout, current != .embedding else { return module }
            return module.withLayout(layout(of: module.target, modelType: modelType))
        }
        return corrected
    }
}
