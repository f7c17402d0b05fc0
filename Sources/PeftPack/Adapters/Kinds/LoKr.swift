/// LoKr (PEFT's port of LyCORIS's Kronecker-product adapter, tuners/lokr): ΔW = scale · W1 ⊗ W2
/// on a linear weight [out, in] = [a·b, c·d], W1 [a, c] stored whole (`w1`) or as W1a [a, r] ·
/// W1b [r, c], W2 [b, d] whole (`w2`) or as W2a [b, r] · W2b [r, d]; scale = alpha/r after
/// rank_pattern and alpha_pattern, whichever forms the factors take (spec/FORMAT.md §9.12).
public struct LoKrModule: Sendable, Equatable {
    public var layout: WeightLayout
    public var rank: Int
    public var scale: Double

    public init(layout: WeightLayout, rank: Int, scale: Double) {
        self.layout = layout
        self.rank = rank
        self.scale = scale
    }
}

extension LoKrModule {
    /// Each side is whole or factored; `factors` checks that exactly one form is there.
    public static let rules = KindRules(
        requiredRoles: [],
        optionalRoles: [TensorRole.kroneckerW1, TensorRole.kroneckerW1A, TensorRole.kroneckerW1B,
                        TensorRole.kroneckerW2, TensorRole.kroneckerW2A, TensorRole.kroneckerW2B],
        mergeable: true, addedComputation: nil, stackable: false, exports: [.peft])

    /// One Kronecker factor as a row-major matrix, from whichever form the module stores.
    struct Factor {
        var rows: Int
        var cols: Int
        var values: [Double]
    }

    /// W1 (side 1) or W2 (side 2): its [rows, cols] and whether it is stored whole, from the
    /// stored tensors' shapes (`shape`), or why they do not make one factor at `rank`.
    static func factorShape(side: Int, roles: Set<String>, rank: Int, shape: (String) throws -> [Int],
                            fail: (String) -> Error) throws -> (rows: Int, cols: Int, whole: Bool) {
        let (whole, left, right) = Self.roles(side)
        switch (roles.contains(whole), roles.contains(left), roles.contains(right)) {
        case (true, false, false):
            let dims = try shape(whole)
            guard dims.count == 2 else { throw fail("w\(side) is \(Shape.describe(dims)), not a matrix") }
            return (dims[0], dims[1], true)
        case (false, true, true):
            let a = try shape(left), b = try shape(right)
            guard a.count == 2, b.count == 2, a[1] == rank, b[0] == rank else {
                throw fail("w\(side)_a \(Shape.describe(a)) and w\(side)_b \(Shape.describe(b)) are not [rows, \(rank)] and [\(rank), cols]")
            }
            return (a[0], b[1], false)
        default:
            throw fail("has neither w\(side) alone nor both w\(side)_a and w\(side)_b")
        }
    }

    /// W1 (side 1) or W2 (side 2): the whole matrix, or the product of its two factors at `rank`.
    static func factor(side: Int, roles: Set<String>, rank: Int, shape: (String) throws -> [Int], values: (String) throws -> [Double],
                       fail: (String) -> Error) throws -> Factor {
        let (rows, cols, isWhole) = try factorShape(side: side, roles: roles, rank: rank, shape: shape, fail: fail)
        let (whole, left, right) = Self.roles(side)
        let product = isWhole ? try values(whole) : DenseProduct.product(try values(left), try values(right), rows: rows, inner: rank, cols: cols)
        return Factor(rows: rows, cols: cols, values: product)
    }

    /// A side's roles: whole, left factor, right factor.
    static func roles(_ side: Int) -> (String, String, String) {
        side == 1 ? (TensorRole.kroneckerW1, TensorRole.kroneckerW1A, TensorRole.kroneckerW1B)
                  : (TensorRole.kroneckerW2, TensorRole.kroneckerW2A, TensorRole.kroneckerW2B)
    }

    /// One side as L [rows, k] · R [k, cols]: its two stored factors, or the whole matrix against
    /// an identity on its shorter dimension (k = min(rows, cols)).
    struct SideFactors {
        var rows: Int
        var cols: Int
        var k: Int
        var left: [Float]
        var right: [Float]
    }

    static func sideFactors(side: Int, roles: Set<String>, rank: Int, shape: (String) throws -> [Int], values: (String) throws -> [Float],
                            fail: (String) -> Error) throws -> SideFactors {
        let (rows, cols, isWhole) = try factorShape(side: side, roles: roles, rank: rank, shape: shape, fail: fail)
        let (whole, left, right) = Self.roles(side)
        guard isWhole else { return SideFactors(rows: rows, cols: cols, k: rank, left: try values(left), right: try values(right)) }
        let matrix = try values(whole)
        let k = min(rows, cols)
        var identity = [Float](repeating: 0, count: k * k)
        for index in 0..<k { identity[index * k + index] = 1 }
        return rows <= cols ? SideFactors(rows: rows, cols: cols, k: k, left: identity, right: matrix)
                            : SideFactors(rows: rows, cols: cols, k: k, left: matrix, right: identity)
    }

    /// ΔW = scale · (L1·R1) ⊗ (L2·R2) = (scale · L1 ⊗ L2)·(R1 ⊗ R2), an exact rank-k1·k2 product.
    /// Returns A = R1 ⊗ R2 [k1·k2, c·d] and Bᵀ = (scale · L1 ⊗ L2)ᵀ [k1·k2, a·b], row-major.
    static func lowRankFactors(_ one: SideFactors, _ two: SideFactors, scale: Double) -> (a: Matrix, bTransposed: Matrix) {
        let k = one.k * two.k, out = one.rows * two.rows, inputs = one.cols * two.cols
        var a = [Float](repeating: 0, count: k * inputs), bT = [Float](repeating: 0, count: k * out)
        let factor = Float(scale)
        for p in 0..<one.k {
            for q in 0..<two.k {
                let row = p * two.k + q
                for x in 0..<one.cols {
                    let outer = one.right[p * one.cols + x]
                    for y in 0..<two.cols { a[row * inputs + x * two.cols + y] = outer * two.right[q * two.cols + y] }
                }
                for i in 0..<one.rows {
                    let outer = factor * one.left[i * one.k + p]
                    for j in 0..<two.rows { bT[row * out + i * two.rows + j] = outer * two.left[j * two.k + q] }
                }
            }
        }
        return (Matrix(rows: k, cols: inputs, values: a), Matrix(rows: k, cols: out, values: bT))
    }

    /// scale · W1 ⊗ W2 [a·b, c·d], row-major, or nil when that is not [out, in].
    static func delta(_ w1: Factor, _ w2: Factor, out: Int, inputs: Int, scale: Double) -> [Double]? {
        guard w1.rows * w2.rows == out, w1.cols * w2.cols == inputs else { return nil }
        var delta = [Double](repeating: 0, count: out * inputs)
        for i in 0..<w1.rows {
            for p in 0..<w1.cols {
                let outer = scale * w1.values[i * w1.cols + p]
                for j in 0..<w2.rows {
                    let row = (i * w2.rows + j) * inputs + p * w2.cols
                    for q in 0..<w2.cols { delta[row + q] = outer * w2.values[j * w2.cols + q] }
                }
            }
        }
        return delta
    }

    /// ΔW of a module whose tensors `shape` and `values` give by role.
    static func delta(roles: Set<String>, rank: Int, out: Int, inputs: Int, scale: Double, shape: (String) throws -> [Int],
                      values: (String) throws -> [Double], fail: (String) -> Error) throws -> [Double] {
        let w1 = try factor(side: 1, roles: roles, rank: rank, shape: shape, values: values, fail: fail)
        let w2 = try factor(side: 2, roles: roles, rank: rank, shape: shape, values: values, fail: fail)
        guard let delta = delta(w1, w2, out: out, inputs: inputs, scale: scale) else {
            throw fail("W1 [\(w1.rows), \(w1.cols)] ⊗ W2 [\(w2.rows), \(w2.cols)] is not the weight's [\(out), \(inputs)]")
        }
        return delta
    }
}

// MARK: Run time: ΔW formed once in fp64, rounded once, added to the weight the layer uses.

extension AdapterSet {
    mutating func addLoKr(_ module: AdapterModule, _ settings: LoKrModule, _ source: AdapterTensors) throws {
        try source.checkRoles(of: module)
        let (index, target) = try denseDeltaTarget(module, kind: "LoKr", source)
        var loaded: [String: (shape: [Int], values: [Double])] = [:]
        for role in module.tensors.keys {
            let tensor = try source.require(role, of: module)
            loaded[role] = (tensor.shape, tensor.values.map(Double.init))
        }
        let delta = try LoKrModule.delta(roles: Set(module.tensors.keys), rank: settings.rank, out: target.outFeatures, inputs: target.inFeatures,
                                         scale: settings.scale, shape: { loaded[$0]!.shape }, values: { loaded[$0]!.values },
                                         fail: { source.fail("module \(module.target): \($0)") })
        try addDenseDelta(delta, to: index)
    }
}

// MARK: Merge

extension MergeArithmetic {
    /// target += weight · ΔW, W stored [out, in].
    static func addLoKr(_ target: inout [Double], shape: [Int], roles: Set<String>, tensorShape: (String) throws -> [Int],
                        factors: (String) throws -> [Double], settings: LoKrModule, weight: Double, fail: (String) -> Error) throws {
        guard shape.count == 2 else { throw fail("LoKr changes a matrix, not a \(Shape.describe(shape)) tensor") }
        let delta = try LoKrModule.delta(roles: roles, rank: settings.rank, out: shape[0], inputs: shape[1], scale: settings.scale * weight,
                                         shape: tensorShape, values: factors, fail: fail)
        add(&target, delta, scale: 1)
    }
}
