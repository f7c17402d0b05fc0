/// The layout PEFT gives a module it adapts. PEFT decides it per module from the module's type
/// (lora/model.py `_create_new_module`): a transformers Conv1D runs with fan_in_fan_out, an
/// nn.Linear without, whatever adapter_config.json says (the saved value is whatever the last
/// module visited left there). Every consumer of `AdapterModule.layout` goes through this rule.
public enum ModuleLayoutRule {
    /// The layout of the weight module `target`, as the family of the base's config.json
    /// `model_type` stores it (`Architecture.layerModules`); everything else is nn.Linear. With no
    /// base at hand (`modelType` nil) a module is taken as its name reads in the registered
    /// families, so GPT-2-style names are Conv1D; a base of a family outside the registry is
    /// taken as nn.Linear (gpt_bigcode and Qwen use nn.Linear under GPT-2's names, which is why a
    /// known base decides).
    public static func layout(of target: String, modelType: String?) -> WeightLayout {
        guard let modelType else {
            let layouts = ArchitectureRegistry.all.compactMap { $0.layerModule(at: target)?.layout }
            return layouts.contains(.conv1d) ? .conv1d : .linear
        }
        return ArchitectureRegistry.architecture(modelType: modelType)?.layerModule(at: target)?.layout ?? .linear
    }

    /// `adapter` with each weight module's layout set by the rule: embeddings (known from their
    /// saved keys) and whole-tensor modules stay as they are.
    public static func correcting(_ adapter: Adapter, modelType: String?) -> Adapter {
        guard adapter.kind == .lora || adapter.kind == .ia3 else { return adapter }
        var corrected = adapter
        for index in corrected.modules.indices where corrected.modules[index].mode == nil && corrected.modules[index].layout != .embedding {
            corrected.modules[index].layout = layout(of: corrected.modules[index].target, modelType: modelType)
        }
        return corrected
    }
}
