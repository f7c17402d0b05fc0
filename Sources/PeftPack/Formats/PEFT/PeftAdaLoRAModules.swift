/// An AdaLoRA module from what PEFT saved for it (tuners/adalora): lora_A [r, in], lora_B
/// [out, r], lora_E [r, 1], r the rank its rank_pattern keeps (init_r before any pruning). What
/// PeftModel.from_pretrained then computes (model.py resize_modules_by_rank_pattern keeps each
/// layer's ranknum, the init_r it was built with): scale = scaling / (ranknum + 1e-5), scaling
/// being lora_alpha, or the module's rank when lora_alpha is 0, with ranknum + 1e-5 formed in fp32.
enum PeftAdaLoRAModules {
    /// nil for a module pruned to rank 0, which changes nothing (its saved tensors are empty).
    static func module(target: String, config: PeftConfig, shapes: [String: [Int]], file: String,
                       keys: [String: String]) throws -> (change: ModuleChange, shapes: [String: [Int]])? {
        func fail(_ problem: String) -> InputError {
            InputError(file: file, tensor: keys.values.sorted().first, problem: "\(target): \(problem)")
        }
        guard let a = shapes[TensorRole.loraA], let b = shapes[TensorRole.loraB], let e = shapes[TensorRole.singularValues] else {
            throw fail("an AdaLoRA module needs lora_A, lora_B and lora_E")
        }
        let initial = config.initialRank ?? 12
        let rank = config.keptRanks[target + ".lora_E"] ?? initial
        guard a.count == 2, b.count == 2, a[0] == rank, b[1] == rank, e == [rank, 1] else {
            throw fail("adapter_config.json keeps rank \(rank), but lora_A is \(Shape.describe(a)), lora_B \(Shape.describe(b)) and lora_E \(Shape.describe(e)) (expected [r, in], [out, r], [r, 1])")
        }
        guard rank > 0 else { return nil }
        let scaling = config.loraAlpha > 0 ? config.loraAlpha : Double(rank)
        let ranknum = Float(initial) + Float(1e-5)
        let layout = ModuleLayoutRule.layout(of: target, modelType: nil)
        var stored = shapes
        stored[TensorRole.singularValues] = [rank]
        return (.adalora(AdaLoRAModule(layout: layout, rank: rank, scale: scaling / Double(ranknum))), stored)
    }
}
