/// Adapters that insert computation or tokens: bottleneck blocks, prefix keys/values, prompts.
extension AdapterSet {
    mutating func addBottleneck(_ module: AdapterModule, _ site: BottleneckModule, settings: AdapterSettings,
                                _ source: AdapterTensors) throws {
        try source.allowOnly([TensorRole.downWeight, TensorRole.downBias, TensorRole.upWeight, TensorRole.upBias],
                             in: module)
        guard (0..<model.config.numLayers).contains(site.layer) else {
            throw source.fail("bottleneck module \(module.target) needs a layer in 0..<\(model.config.numLayers)")
        }
        let placement = try BottleneckPlacement(settings: settings, source: source)
        let hidden = model.config.hiddenSize
        let down = try source.require(TensorRole.downWeight, of: module)
        guard down.shape.count == 2, down.shape[0] > 0 else {
            throw source.fail("tensor \(down.name) must be a [bottleneck, hidden] matrix")
        }
        let size = down.shape[0]
        try source.check(down, [size, hidden])
        let up = try source.require(TensorRole.upWeight, of: module)
        try source.check(up, [hidden, size])
        let downBias = try source.optional(TensorRole.downBias, of: module)
        if let downBias { try source.check(downBias, [size]) }
        let upBias = try source.optional(TensorRole.upBias, of: module)
        if let upBias { try source.check(upBias, [hidden]) }
        let block = BottleneckBlock(
            downWeight: down.values, downBias: downBias?.values, upWeight: up.values, upBias: upBias?.values,
            bottleneckSize: size, activation: placement.activation, scaling: placement.scaling,
            originalLnBefore: placement.originalLnBefore, originalLnAfter: placement.originalLnAfter,
            residualBeforeLn: placement.residualBeforeLn)
        bottlenecks[BottleneckSite(layer: site.layer, position: site.position), default: []].append(block)
    }

    mutating func addPrefix(_ module: AdapterModule, layer: Int, settings: AdapterSettings, _ source: AdapterTensors) throws {
        try source.allowOnly([TensorRole.prefixKeys, TensorRole.prefixValues], in: module)
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

    mutating func addPrompt(_ module: AdapterModule, settings: AdapterSettings, _ source: AdapterTensors) throws {
        try source.allowOnly([TensorRole.promptEmbeddings], in: module)
        let hidden = model.config.hiddenSize
        let embeddings = try source.require(TensorRole.promptEmbeddings, of: module)
        guard let tokens = embeddings.shape.first, tokens > 0 else {
            throw source.fail("tensor \(embeddings.name) has no virtual tokens")
        }
        if let declared = settings.numVirtualTokens, declared != tokens {
            throw source.fail("prompt declares \(declared) virtual tokens but \(embeddings.name) has \(tokens)")
        }
        try source.check(embeddings, [tokens, hidden])
        var prompt = self.prompt ?? TokenMatrix(rows: 0, cols: hidden)
        prompt.values += embeddings.values
        prompt.rows += tokens
        self.prompt = prompt
    }
}

/// Where a bottleneck block sits relative to the sub-block's residual and layer norm, with
/// AdapterHub's defaults: SeqBnConfig ("pfeiffer") and DoubleSeqBnConfig ("houlsby") set all
/// flags; explicit settings override them.
struct BottleneckPlacement {
    let originalLnBefore: Bool
    let originalLnAfter: Bool
    let residualBeforeLn: Bool
    let activation: ActivationFunction
    let scaling: Float

    init(settings: AdapterSettings, source: AdapterTensors) throws {
        var lnBefore = false, lnAfter = true, residualBeforeLn = true
        var nonLinearity: String?
        switch settings.bottleneckArchitecture?.lowercased() {
        case "pfeiffer", "seq_bn", "seqbn":
            (lnBefore, nonLinearity) = (true, "relu")
        case "houlsby", "double_seq_bn", "doubleseqbn":
            (lnBefore, nonLinearity) = (false, "swish")
        case nil:
            break
        case let other?:
            throw source.fail("bottleneck architecture \(other) is not supported")
        }
        originalLnBefore = settings.originalLnBefore ?? lnBefore
        originalLnAfter = settings.originalLnAfter ?? lnAfter
        self.residualBeforeLn = settings.residualBeforeLn ?? residualBeforeLn
        guard let name = settings.nonLinearity ?? nonLinearity else {
            throw source.fail("bottleneck adapter has no non_linearity")
        }
        do {
            activation = try ActivationFunction(name: name)
        } catch {
            throw source.fail("non_linearity \(name) is not supported")
        }
        scaling = Float(settings.scaling ?? 1)
    }
}
