/// Prefix tuning / P-tuning v2: extra attention keys and values prepended at every layer
/// (spec/FORMAT.md §9.8); a module per layer, `ModuleChange.prefix(layer:)`.
public enum PrefixTuning {
    /// keys and values: [tokens, key/value heads, head size].
    public static let rules = KindRules(
        requiredRoles: [TensorRole.prefixKeys, TensorRole.prefixValues], optionalRoles: [],
        mergeable: false, addedComputation: "extra attention keys and values", stackable: true, exports: [.peft])
}

// MARK: Run time (not mergeable: it adds keys and values)

extension AdapterSet {
    mutating func addPrefix(_ module: AdapterModule, layer: Int, settings: AdapterSettings, _ source: AdapterTensors) throws {
        try source.checkRoles(of: module)
        let config = model.config
        guard (0..<config.numLayers).contains(layer) else {
            throw source.fail("prefix module \(module.target) needs a layer in 0..<\(config.numLayers)")
        }
        let heads = config.numKeyValueHeads, headDim = config.headDim
        if let declared = settings.numKeyValueHeads, declared != heads {
            throw source.fail("prefix has \(declared) key/value heads but the model has \(heads)")
        }
        if let declared = settings.headDim, declared != headDim {
            throw source.fail("prefix has head size \(declared) but the model has \(headDim)")
        }
        let keys = try source.require(TensorRole.prefixKeys, of: module)
        let values = try source.require(TensorRole.prefixValues, of: module)
        guard let tokens = keys.shape.first, tokens > 0 else {
            throw source.fail("tensor \(keys.name) has no virtual tokens")
        }
        if let declared = settings.numVirtualTokens, declared != tokens {
            throw source.fail("prefix declares \(declared) virtual tokens but \(keys.name) has \(tokens)")
        }
        for tensor in [keys, values] {
            try source.check(tensor, [tokens, heads, headDim], alternatives: [[tokens, heads * headDim]])
        }
        if prefixKeys.isEmpty {
            prefixKeys = Array(repeating: TokenMatrix(rows: 0, cols: heads * headDim), count: config.numLayers)
            prefixValues = prefixKeys
        }
        prefixKeys[layer].values += keys.values
        prefixKeys[layer].rows += tokens
        prefixValues[layer].values += values.values
        prefixValues[layer].rows += tokens
    }

    /// Every layer must receive the same number of prefix tokens, as a KV cache holds them.
    func checkPrefixComplete(_ adapter: Adapter) throws {
        guard let length = prefixKeys.first?.rows,
              let short = prefixKeys.indices.first(where: { prefixKeys[$0].rows != length })
        else { return }
        throw RuntimeError.invalidAdapter(
            adapter: adapter.name,
            reason: "prefix reaches layer 0 with \(length) tokens but layer \(short) with \(prefixKeys[short].rows)")
    }
}
