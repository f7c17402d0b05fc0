/// LoHa (PEFT's port of LyCORIS's Hadamard-product adapter, tuners/loha): ΔW = scale ·
/// (W1a·W1b) ⊙ (W2a·W2b) on a linear weight, W1a and W2a [out, r], W1b and W2b [r, in], scale =
/// alpha/r after rank_pattern and alpha_pattern (spec/FORMAT.md §9.11). PEFT computes ΔW in full
/// and adds F.linear(x, ΔW) to the base layer's output.
public struct LoHaModule: Sendable, Equatable {
    public var layout: WeightLayout
    public var rank: Int
    public var scale: Double

    public init(layout: WeightLayout, rank: Int, scale: Double) {
        self.layout = layout
        self.rank = rank
        self.scale = scale
    }
}

extension LoHaModule {
    public static let rules = KindRules(
        requiredRoles: [TensorRole.hadamardW1A, TensorRole.hadamardW1B, TensorRole.hadamardW2A, TensorRole.hadamardW2B],
        optionalRoles: [], mergeable: true, addedComputation: nil, stackable: false, exports: [.peft])

    /// ΔW [out, in] (row-major, fp64) from the four factors, or why they do not fit the rank and
    /// the weight's shape.
    static func delta(w1a: [Double], w1b: [Double], w2a: [Double], w2b: [Double], rank: Int, out: Int, inputs: Int,
                      scale: Double) -> [Double]? {
        guard w1a.count == out * rank, w2a.count == out * rank, w1b.count == rank * inputs, w2b.count == rank * inputs else { return nil }
        var first = DenseProduct.product(w1a, w1b, rows: out, inner: rank, cols: inputs)
        let second = DenseProduct.product(w2a, w2b, rows: out, inner: rank, cols: inputs)
        for index in first.indices { first[index] = first[index] * second[index] * scale }
        return first
    }

    /// ΔW as an exact rank-r² product B·A, with scale folded into B: B's column (i, j) is
    /// W1a[:, i] ⊙ W2a[:, j], A's row (i, j) is W1b[i, :] ⊙ W2b[j, :] (the face-splitting
    /// products), since (W1a·W1b) ⊙ (W2a·W2b) = Σᵢⱼ (W1a[:, i] ⊙ W2a[:, j])(W1b[i, :] ⊙ W2b[j, :]).
    /// Returns A [r², in] and Bᵀ [r², out], row-major.
    static func lowRankFactors(w1a: [Float], w1b: [Float], w2a: [Float], w2b: [Float], rank: Int, out: Int, inputs: Int,
                               scale: Double) -> (a: Matrix, bTransposed: Matrix) {
        let k = rank * rank
        var a = [Float](repeating: 0, count: k * inputs), bT = [Float](repeating: 0, count: k * out)
        let factor = Float(scale)
        for i in 0..<rank {
            for j in 0..<rank {
                let row = i * rank + j
                for x in 0..<inputs { a[row * inputs + x] = w1b[i * inputs + x] * w2b[j * inputs + x] }
                for o in 0..<out { bT[row * out + o] = factor * w1a[o * rank + i] * w2a[o * rank + j] }
            }
        }
        return (Matrix(rows: k, cols: inputs, values: a), Matrix(rows: k, cols: out, values: bT))
    }

    /// The four factors' shapes for a weight [out, in] at this rank, by role.
    static func shapes(rank: Int, out: Int, inputs: Int) -> [String: [Int]] {
        [TensorRole.hadamardW1A: [out, rank], TensorRole.hadamardW1B: [rank, inputs],
         TensorRole.hadamardW2A: [out, rank], TensorRole.hadamardW2B: [rank, inputs]]
    }
}

// MARK: Run time: ΔW formed once in fp64, rounded once, added to the weight the layer uses.

extension AdapterSet {
    mutating func addLoHa(_ module: AdapterModule, _ settings: LoHaModule, _ source: AdapterTensors) throws {
        try source.checkRoles(of: module)
        let (index, target) = try denseDeltaTarget(module, kind: "LoHa", source)
        let expected = LoHaModule.shapes(rank: settings.rank, out: target.outFeatures, inputs: target.inFeatures)
        var factors: [String: [Double]] = [:]
        for (role, shape) in expected {
            let tensor = try source.require(role, of: module)
            try source.check(tensor, shape)
            factors[role] = tensor.values.map(Double.init)
        }
        let delta = LoHaModule.delta(w1a: factors[TensorRole.hadamardW1A]!, w1b: factors[TensorRole.hadamardW1B]!,
                                     w2a: factors[TensorRole.hadamardW2A]!, w2b: factors[TensorRole.hadamardW2B]!,
                                     rank: settings.rank, out: target.outFeatures, inputs: target.inFeatures, scale: settings.scale)!
        try addDenseDelta(delta, to: index)
    }
}

// MARK: Merge

extension MergeArithmetic {
    /// target += weight · ΔW, W stored [out, in].
    static func addLoHa(_ target: inout [Double], shape: [Int], factors: (String) throws -> [Double], settings: LoHaModule,
                        weight: Double, fail: (String) -> Error) throws {
        guard shape.count == 2, let delta = LoHaModule.delta(
            w1a: try factors(TensorRole.hadamardW1A), w1b: try factors(TensorRole.hadamardW1B),
            w2a: try factors(TensorRole.hadamardW2A), w2b: try factors(TensorRole.hadamardW2B),
            rank: settings.rank, out: shape[0], inputs: shape[1], scale: settings.scale * weight) else {
            throw fail("its LoHa factors do not make a \(Shape.describe(shape)) weight at rank \(settings.rank)")
        }
        add(&target, delta, scale: 1)
    }
}
