/// AdaLoRA (PEFT tuners/adalora): an SVD-shaped LoRA, ΔW = scale · B·(A ⊙ E) with A [r, in],
/// B [out, r] and the singular values E [r] scaling A's rows; r is the rank left after AdaLoRA's
/// pruning and scale is lora_alpha / (ranknum + 1e-5), ranknum being the init_r the layer was
/// built with (spec/FORMAT.md §9.13). PEFT adds (x·(A ⊙ E)ᵀ·Bᵀ) · scaling / ranknum to the
/// base layer's output.
public struct AdaLoRAModule: Sendable, Equatable {
    public var layout: WeightLayout
    public var rank: Int
    public var scale: Double

    public init(layout: WeightLayout, rank: Int, scale: Double) {
        self.layout = layout
        self.rank = rank
        self.scale = scale
    }
}

extension AdaLoRAModule {
    public static let rules = KindRules(
        requiredRoles: [TensorRole.loraA, TensorRole.loraB, TensorRole.singularValues], optionalRoles: [],
        mergeable: true, addedComputation: nil, stackable: false, exports: [.peft])

    /// A ⊙ E: each row of A [r, in] times its singular value (fp32 at run time as PEFT forms it,
    /// fp64 for merge).
    static func scaledRows<T: BinaryFloatingPoint>(_ a: [T], singularValues e: [T], inputs: Int) -> [T] {
        var out = a
        for row in e.indices {
            for column in 0..<inputs { out[row * inputs + column] = a[row * inputs + column] * e[row] }
        }
        return out
    }
}

// MARK: Run time: a LoRA update with A ⊙ E for A.

extension AdapterSet {
    mutating func addAdaLoRA(_ module: AdapterModule, _ settings: AdaLoRAModule, _ source: AdapterTensors) throws {
        try source.checkRoles(of: module)
        guard let reference = model.module(named: module.target) else {
            throw RuntimeError.unknownTarget(adapter: source.adapter, target: module.target)
        }
        guard case .linear(let index) = reference else {
            throw source.fail("module \(module.target) is an embedding; AdaLoRA adapts linear layers")
        }
        let target = model.linears[index]
        let a = try source.require(TensorRole.loraA, of: module)
        let b = try source.require(TensorRole.loraB, of: module)
        let e = try source.require(TensorRole.singularValues, of: module)
        let rank = settings.rank
        try source.check(a, [rank, target.inFeatures])
        try source.check(b, [target.outFeatures, rank])
        try source.check(e, [rank], alternatives: [[rank, 1]])
        let update = LowRankUpdate(a: AdaLoRAModule.scaledRows(a.values, singularValues: e.values, inputs: target.inFeatures), b: b.values,
                                   rank: rank, scale: Float(settings.scale), scaledBBias: nil, doraFactor: nil)
        linear[index, default: LinearAdapters()].updates.append(update)
    }
}

// MARK: Merge

extension MergeArithmetic {
    /// target += weight · scale · B·(A ⊙ E) in the stored orientation.
    static func addAdaLoRA(_ target: inout [Double], orientation: WeightOrientation, a: [Double], b: [Double], singularValues e: [Double],
                           rank: Int, alpha: Double) {
        addLowRank(&target, orientation: orientation, a: AdaLoRAModule.scaledRows(a, singularValues: e, inputs: orientation.inputs),
                   b: b, rank: rank, alpha: alpha)
    }
}
