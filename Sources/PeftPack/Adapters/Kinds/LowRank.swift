/// LoRA / rsLoRA / DoRA: ΔW = scale · B·A on a linear, Conv1D or embedding weight
/// (spec/FORMAT.md §9.5); DoRA when the module carries a magnitude vector.
public struct LowRankModule: Sendable, Equatable {
    public var layout: WeightLayout
    /// r: rows of A.
    public var rank: Int
    /// The factor in ΔW = scale · B·A, already resolved from alpha/r, alpha/√r or patterns.
    public var scale: Double

    public init(layout: WeightLayout, rank: Int, scale: Double) {
        self.layout = layout
        self.rank = rank
        self.scale = scale
    }
}

extension LowRankModule {
    /// A: [r, in], B: [out, r]; DoRA's magnitude [out]; B's bias [out] (PEFT lora_bias); the
    /// target's own bias, replaced (PEFT bias="lora_only"/"all").
    public static let rules = KindRules(
        requiredRoles: [TensorRole.loraA, TensorRole.loraB],
        optionalRoles: [TensorRole.loraBBias, TensorRole.magnitude, TensorRole.targetBias],
        mergeable: true, addedComputation: nil, stackable: true, exports: [.peft, .gguf, .mlx])
}

// MARK: Run time: validated once, then applied unmerged by ForwardPass (Runtime/AdapterOperations).

extension AdapterSet {
    mutating func addLowRank(_ module: AdapterModule, _ settings: LowRankModule, _ source: AdapterTensors) throws {
        try source.checkRoles(of: module)
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
                factor = doraFactor(magnitude: magnitude.values, weight: try currentValue(target.weight),
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
                factor = doraFactor(magnitude: magnitude.values, weight: try currentValue(target.weight),
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
}

// MARK: Merge: the fold into the stored weight, in fp64 (the fast path is Operations/LowRankMerge).

extension MergeArithmetic {
    /// target += alpha · B·A in the stored orientation (BLAS sgemm, fp32 accumulation).
    static func addLowRank(_ target: inout [Double], orientation: WeightOrientation, a: [Double], b: [Double], rank: Int, alpha: Double) {
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                target.withUnsafeMutableBufferPointer { pc in
                    if orientation.transposed {
                        BLAS.gemm(transposeA: true, transposeB: true, m: orientation.inputs, n: orientation.out, k: rank, alpha: alpha,
                                  a: pa.baseAddress!, lda: orientation.inputs, b: pb.baseAddress!, ldb: rank,
                                  beta: 1, c: pc.baseAddress!, ldc: orientation.out)
                    } else {
                        BLAS.gemm(transposeA: false, transposeB: false, m: orientation.out, n: orientation.inputs, k: rank, alpha: alpha,
                                  a: pb.baseAddress!, lda: rank, b: pa.baseAddress!, ldb: orientation.inputs,
                                  beta: 1, c: pc.baseAddress!, ldc: orientation.inputs)
                    }
                }
            }
        }
    }

    /// DoRA as PEFT merges it: V = W + s·B·A, W' = (m / ‖V_o,:‖) · V per output row o; with weight
    /// w the result is W + w·(W' − W).
    static func applyDoRA(_ target: inout [Double], orientation: WeightOrientation, a: [Double], b: [Double], rank: Int,
                          scale: Double, magnitude: [Double], weight: Double) {
        var merged = target
        addLowRank(&merged, orientation: orientation, a: a, b: b, rank: rank, alpha: scale)
        for o in 0..<orientation.out {
            var squares = 0.0
            for i in 0..<orientation.inputs {
                let value = merged[orientation.offset(o, i)]
                squares += value * value
            }
            let factor = magnitude[o] / squares.squareRoot()
            for i in 0..<orientation.inputs {
                let index = orientation.offset(o, i)
                let dora = factor * merged[index]
                target[index] = weight == 1 ? dora : target[index] + weight * (dora - target[index])
            }
        }
    }
}
