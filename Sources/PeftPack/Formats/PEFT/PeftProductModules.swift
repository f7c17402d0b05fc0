/// A LoHa or LoKr module from the shapes PEFT saved for it, checked against the rank and alpha
/// adapter_config.json gives the module (r and alpha after rank_pattern and alpha_pattern, scale
/// alpha/r: loha/layer.py and lokr/layer.py update_layer).
enum PeftProductModules {
    static func module(kind: AdapterKind, target: String, config: PeftConfig, shapes: [String: [Int]], file: String,
                       keys: [String: String]) throws -> (change: ModuleChange, shapes: [String: [Int]]) {
        let (rank, alpha) = config.rankAndAlpha(moduleName: target)
        let scale = alpha / Double(rank)
        let layout = ModuleLayoutRule.layout(of: target, modelType: nil)
        func fail(_ problem: String) -> InputError {
            InputError(file: file, tensor: keys.values.sorted().first, problem: "\(target): \(problem)")
        }
        guard layout == .linear else { throw fail("PEFT's \(kind.rawValue) adapts nn.Linear layers, not a \(layout.rawValue) layer") }
        if kind == .loha {
            guard let w1a = shapes[TensorRole.hadamardW1A], let w1b = shapes[TensorRole.hadamardW1B],
                  let w2a = shapes[TensorRole.hadamardW2A], let w2b = shapes[TensorRole.hadamardW2B] else {
                throw fail("a LoHa module needs hada_w1_a, hada_w1_b, hada_w2_a and hada_w2_b")
            }
            guard w1a.count == 2, w1b.count == 2 else { throw fail("LoHa factors must be matrices") }
            let expected = LoHaModule.shapes(rank: rank, out: w1a[0], inputs: w1b[1])
            guard [TensorRole.hadamardW1A: w1a, TensorRole.hadamardW1B: w1b, TensorRole.hadamardW2A: w2a, TensorRole.hadamardW2B: w2b] == expected else {
                throw fail("adapter_config.json gives rank \(rank), but the factors are \(Shape.describe(w1a)), \(Shape.describe(w1b)), \(Shape.describe(w2a)), \(Shape.describe(w2b)) (expected [out, r], [r, in] twice)")
            }
            return (.loha(LoHaModule(layout: layout, rank: rank, scale: scale)), shapes)
        }
        // Shapes alone fix W1 and W2; the factored forms must be at the module's rank.
        for side in [1, 2] {
            _ = try LoKrModule.factorShape(side: side, roles: Set(shapes.keys), rank: rank, shape: { shapes[$0]! }, fail: { fail($0) })
        }
        return (.lokr(LoKrModule(layout: layout, rank: rank, scale: scale)), shapes)
    }
}
