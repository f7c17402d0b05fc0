/// Index of a model parameter in `ParameterStore`.
typealias ParameterID = Int

/// Every parameter of a loaded model in fp32, converted once at load.
struct ParameterStore: Sendable {
    /// Names as the runtime addresses them: without the base-model prefix ("bert.", "model.",
    /// "transformer."), e.g. "layers.0.self_attn.q_proj.weight" or "lm_head.weight".
    var names: [String] = []
    var shapes: [[Int]] = []
    var values: [[Float]] = []
    var idsByName: [String: ParameterID] = [:]

    mutating func add(name: String, shape: [Int], values: [Float]) -> ParameterID {
        let id = names.count
        names.append(name)
        shapes.append(shape)
        self.values.append(values)
        idsByName[name] = id
        return id
    }
}

/// Reads the tensors a model expects from a checkpoint, strictly: each must exist with the shape
/// the config implies. Checkpoint keys may carry the base-model prefix or not.
struct ModelWeightLoader {
    let provider: any WeightProvider
    let prefix: String
    private(set) var store = ParameterStore()
    private var available: Set<String>
    private var consumed: Set<String> = []

    init(provider: any WeightProvider, prefix: String) {
        self.provider = provider
        self.prefix = prefix
        available = Set(provider.names)
    }

    /// A parameter that must be present.
    mutating func require(_ name: String, _ shape: [Int], prefixed: Bool = true) throws -> ParameterID {
        guard let id = try load(name, shape, prefixed: prefixed) else {
            throw RuntimeError.missingWeight(name: displayName(name, prefixed: prefixed), expectedShape: shape)
        }
        return id
    }

    /// A parameter the architecture has only in some checkpoints (e.g. BERT's pooler).
    mutating func optional(_ name: String, _ shape: [Int], prefixed: Bool = true) throws -> ParameterID? {
        try load(name, shape, prefixed: prefixed)
    }

    /// A second name for an already loaded parameter whose storage it shares (a tied head);
    /// adapters may replace the alias without touching the original.
    mutating func alias(_ name: String, of id: ParameterID) -> ParameterID {
        store.add(name: name, shape: store.shapes[id], values: store.values[id])
    }

    /// Marks checkpoint keys the model knowingly ignores (buffers, a tied head's duplicate).
    mutating func ignore(where predicate: (String) -> Bool) {
        consumed.formUnion(available.filter(predicate))
    }

    /// Checkpoint tensors nothing consumed, sorted.
    var unused: [String] {
        available.subtracting(consumed).sorted()
    }

    private func candidates(_ name: String, prefixed: Bool) -> [String] {
        var names = prefixed ? ["\(prefix).\(name)", name] : [name]
        // Old BERT checkpoints name LayerNorm parameters gamma and beta; transformers renames them.
        if name.hasSuffix("LayerNorm.weight") || name.hasSuffix("LayerNorm.bias") {
            let legacy = name.hasSuffix(".weight")
                ? String(name.dropLast("weight".count)) + "gamma" : String(name.dropLast("bias".count)) + "beta"
            names += prefixed ? ["\(prefix).\(legacy)", legacy] : [legacy]
        }
        return names
    }

    private func displayName(_ name: String, prefixed: Bool) -> String {
        prefixed ? "\(name) (or \(prefix).\(name))" : name
    }

    private mutating func load(_ name: String, _ shape: [Int], prefixed: Bool) throws -> ParameterID? {
        guard let key = candidates(name, prefixed: prefixed).first(where: available.contains),
              let tensor = try provider.tensor(key)
        else { return nil }
        guard tensor.shape == shape else {
            throw RuntimeError.weightShape(name: key, shape: tensor.shape, expected: shape)
        }
        guard tensor.dtype.isFloatingPoint else { throw RuntimeError.weightDType(name: key, dtype: tensor.dtype) }
        let values = tensor.floats()
        consumed.insert(key)
        return store.add(name: name, shape: shape, values: values)
    }
}
