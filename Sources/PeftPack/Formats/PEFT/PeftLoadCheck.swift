/// Whether `PeftModel.from_pretrained` would load a saved tensor. PEFT first builds its layers from
/// adapter_config.json (PeftTargetRules), then loads the file with `load_state_dict(strict=False)`
/// (peft/utils/save_and_load.py `set_peft_model_state_dict`): a key that names no parameter of the
/// wrapped model is dropped without a word. peftpack refuses such a tensor rather than apply a
/// change PEFT never makes.
struct PeftLoadCheck {
    let rules: PeftTargetRules?
    /// The saved-key suffixes of the adapter type's own factors.
    let factorSuffixes: [(suffix: String, role: String, layout: WeightLayout?)]

    init(config: PeftConfig) {
        rules = config.targetRules
        let kinds: [String: AdapterKind] = ["LOHA": .loha, "LOKR": .lokr, "ADALORA": .adalora, "VERA": .vera]
        factorSuffixes = PeftKeys.factorSuffixes(of: kinds[config.peftType] ?? .lora)
    }

    /// nil when PEFT loads the tensor at `path` (its key without `base_model.model.`), else why not.
    func whyNotLoaded(_ path: String) -> String? {
        guard let rules else { return nil }
        if let factor = factorSuffixes.first(where: { path.hasSuffix($0.suffix) }), factor.role != TensorRole.targetBias {
            let module = String(path.dropLast(factor.suffix.count))
            return rules.whyNotTargeted(module, isEmbedding: factor.layout == .embedding).map { "\(module) \($0)" }
        }
        if path.hasSuffix(PeftKeys.trainableTokensSuffix) { return nil }
        if let infix = path.range(of: PeftKeys.baseLayerInfix) {
            // `<module>.base_layer.*` exists only inside a layer PEFT created.
            let module = String(path[..<infix.lowerBound])
            return rules.whyNotTargeted(module, isEmbedding: false).map { "\(module) \($0), so it has no base_layer" }
        }
        // A plain `<module>.<parameter>` key reaches the base parameter (modules_to_save copies,
        // saved embeddings), unless PEFT wrapped that module, which moves it to base_layer.
        guard let dot = path.lastIndex(of: "."), rules.decidesByName else { return nil }
        let module = String(path[..<dot])
        guard rules.whyNotTargeted(module, isEmbedding: false) == nil else { return nil }
        let parameter = path[path.index(after: dot)...]
        return "\(module) is adapted by PEFT, which keeps its weights as \(module).base_layer.\(parameter), not \(path)"
    }
}

extension PeftTargetRules {
    /// Whether the rules name modules by themselves; with "all-linear" or no target_modules the
    /// module types or PEFT's per-model defaults decide, which the adapter folder does not record.
    var decidesByName: Bool {
        switch targets {
        case .names, .pattern: true
        case .allLinear, .unspecified: false
        }
    }
}

/// Pairs each saved TrainableTokens tensor with its rows from `trainable_token_indices`.
struct TrainableTokenRows {
    private let entries: [(module: String?, rows: [Int])]?
    private var claimed: Set<Int> = []

    init(config: PeftConfig) {
        entries = config.trainableTokenIndices
    }

    /// The rows the tensor saved for `module` replaces. PEFT matches a dictionary key as a plain
    /// suffix of the module name (`_set_trainable`); a list applies to the input embedding, the
    /// only TrainableTokens tensor such a file holds.
    mutating func claim(module: String, key: String, shape: [Int], file: String) throws -> [Int] {
        guard let entries else {
            throw InputError(file: file, tensor: key, problem: "holds trainable-token rows but adapter_config.json has no trainable_token_indices")
        }
        let matching = entries.indices.filter { entries[$0].module.map { module.hasSuffix($0) } ?? true }
        guard matching.count == 1, let index = matching.first else {
            let problem = matching.isEmpty
                ? "holds trainable-token rows for \(module), which trainable_token_indices does not name"
                : "holds trainable-token rows for \(module), which several trainable_token_indices entries name"
            throw InputError(file: file, tensor: key, problem: problem)
        }
        guard claimed.insert(index).inserted else {
            throw InputError(file: file, tensor: key, problem: "is a second trainable-token tensor for trainable_token_indices entry \(entries[index].module ?? "(input embedding)")")
        }
        let rows = entries[index].rows
        guard shape.count == 2, shape[0] == rows.count else {
            throw InputError(file: file, tensor: key, problem: "has shape \(Shape.describe(shape)) but trainable_token_indices gives \(module) \(rows.count) rows ([\(rows.count), dim] expected)")
        }
        return rows
    }

    /// The module whose weight a rows target (`<module>.weight`) names.
    static func module(ofTarget target: String) -> String {
        target.hasSuffix(".weight") ? String(target.dropLast(".weight".count)) : target
    }

    /// Every entry has its tensor, except one PEFT ties to another entry with the same rows (a
    /// tied lm_head saves nothing of its own). PEFT itself fails on any other missing entry.
    func checkAllSaved(file: String) throws {
        guard let entries else { return }
        for (index, entry) in entries.enumerated() where !claimed.contains(index) {
            let tiedToSaved = claimed.contains { entries[$0].rows == entry.rows }
            guard tiedToSaved else {
                throw InputError(file: file, problem: "trainable_token_indices names \(entry.module ?? "the input embedding") but the file holds no \(PeftKeys.trainableTokensSuffix.dropFirst()) tensor for it")
            }
        }
    }
}
