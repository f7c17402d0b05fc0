/// Adapters that change the weights of existing modules: LoRA/rsLoRA/DoRA, IA3, full tensors.
extension AdapterSet {
    mutating func addLowRank(_ module: AdapterModule, _ settings: LowRankModule, _ source: AdapterTensors) throws {
        try source.allowOnly([TensorRole.loraA, TensorRole.loraB, TensorRole.loraBBias, TensorRole.magnitude,
                              TensorRole.targetBias], in: module)
        guard let reference = model.module(named: module.target) else {
            throw RuntimeError.unknownTarget(adapter: source.adapter, target: module.target)
        }
        let a = try source.require(TensorRole.loraA, of: module)
        let b = try source.require(TensorRole.loraB, of: module)
        guard a.shape.count == 2, a.shape[0] > 0 else {
            throw source.fail("tensor \(a.name) must be a [rank, in] matrix, got \(Shape.describe(a.shape))")
        }
        let rank = a.shape[0]
        guard settings.rank == rank else {
            throw source.fail("module \(module.target) declares rank \(settings.rank) but \(a.name) has \(rank) rows")
        }
        let scale = settings.scale
        let magnitude = try source.optional(TensorRole.magnitude, of: module)
        let bBias = try source.optional(TensorRole.loraBBias, of: module)
        if magnitude != nil, bBias != nil {
            throw source.fail("module \(module.target) combines DoRA with a lora_B bias, which PEFT does not support")
        }

        switch reference {
        case .linear(let index):
            let target = model.linears[index]
            if settings.layout == .embedding {
                throw source.fail("module \(module.target) is a linear layer, not an embedding")
            }
            try source.check(a, [rank, target.inFeatures])
            try source.check(b, [target.outFeatures, rank])
            if let bBias { try source.check(bBias, [target.outFeatures]) }
            if let bias = try source.optional(TensorRole.targetBias, of: module) {
                guard let biasID = target.bias else {
                    throw source.fail("module \(module.target) replaces a bias the base layer does not have")
                }
                try source.check(bias, [target.outFeatures])
                overrides[biasID] = bias.values
            }
            var factor: [Float]?
            if let magnitude {
                try source.check(magnitude, [target.outFeatures])
                factor = doraFactor(magnitude: magnitude.values, weight: currentValue(target.weight),
                                    orientation: target.orientation, a: a.values, b: b.values,
                                    rank: rank, scale: Float(scale))
            }
            let update = LowRankUpdate(a: a.values, b: b.values, rank: rank, scale: Float(scale),
                                       scaledBBias: bBias?.values.map { $0 * Float(scale) }, doraFactor: factor)
            linear[index, default: LinearAdapters()].updates.append(update)

        case .embedding(let index):
            let target = model.embeddings[index]
            if settings.layout != .embedding {
                throw source.fail("module \(module.target) is an embedding, not a \(settings.layout.rawValue) layer")
            }
            if module.tensors[TensorRole.targetBias] != nil || bBias != nil {
                throw source.fail("module \(module.target) is an embedding, which has no bias")
            }
            try source.check(a, [rank, target.count])
            try source.check(b, [target.dim, rank])
            var factor: [Float]?
            if let magnitude {
                try source.check(magnitude, [target.dim])
                // PEFT's DoraEmbeddingLayer takes the norm of Wᵀ + scale·B·A, W stored [vocab, dim].
                factor = doraFactor(magnitude: magnitude.values, weight: currentValue(target.weight),
                                    orientation: WeightOrientation(out: target.dim, inputs: target.count, layout: .embedding),
                                    a: a.values, b: b.values, rank: rank, scale: Float(scale))
            }
            embedding[index, default: []].append(
                LowRankUpdate(a: a.values, b: b.values, rank: rank, scale: Float(scale), scaledBBias: nil,
                              doraFactor: factor))
        }
    }

    /// magnitude / ‖W + scale·B·A‖₂ per output row (norm over the input features), with W + ΔW
    /// formed in fp32 as PEFT forms it and the squares accumulated in double.
    private func doraFactor(magnitude: [Float], weight: [Float], orientation: WeightOrientation, a: [Float],
                            b: [Float], rank: Int, scale: Float) -> [Float] {
        let out = orientation.out, inFeatures = orientation.inputs
        let delta = RuntimeKernels.lowRankProduct(b: b, a: a, out: out, rank: rank, in: inFeatures)
        var squares = [Double](repeating: 0, count: out)
        weight.withUnsafeBufferPointer { w in
            delta.withUnsafeBufferPointer { d in
                for row in 0..<out {
                    for col in 0..<inFeatures {
                        let stored = w[orientation.offset(row, col)]
                        let combined = Double(stored + scale * d[row * inFeatures + col])
                        squares[row] += combined * combined
                    }
                }
            }
        }
        return (0..<out).map { magnitude[$0] / Float(squares[$0].squareRoot()) }
    }

    mutating func addIA3(_ module: AdapterModule, _ settings: IA3Module, _ source: AdapterTensors) throws {
        try source.allowOnly([TensorRole.ia3Vector], in: module)
        guard let reference = model.module(named: module.target) else {
            throw RuntimeError.unknownTarget(adapter: source.adapter, target: module.target)
        }
        guard case .linear(let index) = reference else {
            throw source.fail("module \(module.target) is an embedding; IA3 scales linear layers only")
        }
        let side = settings.side
        let target = model.linears[index]
        let vector = try source.require(TensorRole.ia3Vector, of: module)
        let count = side == .input ? target.inFeatures : target.outFeatures
        try source.check(vector, [count], alternatives: [[count, 1], [1, count]])
        var attached = linear[index, default: LinearAdapters()]
        switch side {
        case .input: attached.inputScale = multiply(attached.inputScale, vector.values)
        case .output: attached.outputScale = multiply(attached.outputScale, vector.values)
        }
        linear[index] = attached
    }

    private func multiply(_ existing: [Float]?, _ vector: [Float]) -> [Float] {
        guard let existing else { return vector }
        return zip(existing, vector).map { $0 * $1 }
    }

    /// `adds`: the stored tensor is a delta added to the target rather than its replacement.
    mutating func addFullTensor(_ module: AdapterModule, adds: Bool, _ source: AdapterTensors) throws {
        try source.allowOnly([TensorRole.fullValue], in: module)
        guard let id = model.parameter(named: module.target) else {
            throw RuntimeError.unknownTarget(adapter: source.adapter, target: module.target)
        }
        let value = try source.require(TensorRole.fullValue, of: module)
        try source.check(value, model.parameters.shapes[id])
        overrides[id] = adds ? zip(currentValue(id), value.values).map { $0 + $1 } : value.values
    }
}
