/// VeRA (PEFT tuners/vera): one pair of frozen random projections shared by every module, A
/// [r, largest in] and B [largest out, r], and per module two trained vectors: ΔW = (λ_b ⊙
/// B[:out]) · (λ_d ⊙ A[:, :in]), λ_b [out] scaling B's rows, λ_d [r] A's rows, no other scale
/// (spec/FORMAT.md §9.14). Each module names the shared A and B in its `tensors`.
public struct VeRAModule: Sendable, Equatable {
    public var layout: WeightLayout
    public var rank: Int

    public init(layout: WeightLayout, rank: Int) {
        self.layout = layout
        self.rank = rank
    }
}

extension VeRAModule {
    public static let rules = KindRules(
        requiredRoles: [TensorRole.loraA, TensorRole.loraB, TensorRole.veraLambdaB, TensorRole.veraLambdaD], optionalRoles: [],
        mergeable: true, addedComputation: nil, stackable: false, exports: [.peft])

    /// The module's LoRA factors: λ_d ⊙ A[:, :in] [r, in] and λ_b ⊙ B[:out] [out, r], formed as
    /// `T` (fp32 at run time as PEFT forms them, fp64 for merge), or nil when the shared
    /// projections are too small for the module or the vectors do not fit.
    static func factors<T: BinaryFloatingPoint>(a: [T], aShape: [Int], b: [T], bShape: [Int], lambdaB: [T], lambdaD: [T],
                                                rank: Int, out: Int, inputs: Int) -> (a: [T], b: [T])? {
        guard aShape.count == 2, bShape.count == 2, aShape[0] == rank, bShape[1] == rank, aShape[1] >= inputs, bShape[0] >= out,
              lambdaB.count == out, lambdaD.count == rank else { return nil }
        var sliced = [T](repeating: 0, count: rank * inputs)
        for row in 0..<rank {
            for column in 0..<inputs { sliced[row * inputs + column] = lambdaD[row] * a[row * aShape[1] + column] }
        }
        var up = [T](repeating: 0, count: out * rank)
        for row in 0..<out {
            for column in 0..<rank { up[row * rank + column] = lambdaB[row] * b[row * rank + column] }
        }
        return (sliced, up)
    }
}

extension ModuleChange {
    var isVeRA: Bool {
        if case .vera = self { return true }
        return false
    }
}

// MARK: Run time: a LoRA update with the module's slices and vectors, scale 1.

extension AdapterSet {
    mutating func addVeRA(_ module: AdapterModule, _ settings: VeRAModule, _ source: AdapterTensors) throws {
        try source.checkRoles(of: module)
        guard let reference = model.module(named: module.target) else {
            throw RuntimeError.unknownTarget(adapter: source.adapter, target: module.target)
        }
        guard case .linear(let index) = reference else {
            throw source.fail("module \(module.target) is an embedding; VeRA adapts linear layers")
        }
        let target = model.linears[index]
        let a = try source.require(TensorRole.loraA, of: module), b = try source.require(TensorRole.loraB, of: module)
        let lambdaB = try source.require(TensorRole.veraLambdaB, of: module), lambdaD = try source.require(TensorRole.veraLambdaD, of: module)
        guard let (sliced, up) = VeRAModule.factors(a: a.values, aShape: a.shape, b: b.values, bShape: b.shape, lambdaB: lambdaB.values,
                                                    lambdaD: lambdaD.values, rank: settings.rank, out: target.outFeatures, inputs: target.inFeatures) else {
            throw source.fail("module \(module.target): the shared projections \(Shape.describe(a.shape)) and \(Shape.describe(b.shape)) or the vectors [\(lambdaB.values.count)], [\(lambdaD.values.count)] do not fit a \(target.outFeatures)×\(target.inFeatures) layer at rank \(settings.rank)")
        }
        linear[index, default: LinearAdapters()].updates.append(
            LowRankUpdate(a: sliced, b: up, rank: settings.rank, scale: 1, scaledBBias: nil, doraFactor: nil))
    }
}

// MARK: Merge

extension MergeArithmetic {
    /// target += weight · (λ_b ⊙ B[:out]) · (λ_d ⊙ A[:, :in]) in the stored orientation.
    static func addVeRA(_ target: inout [Double], orientation: WeightOrientation, a: [Double], aShape: [Int], b: [Double], bShape: [Int],
                        lambdaB: [Double], lambdaD: [Double], rank: Int, weight: Double, fail: (String) -> Error) throws {
        guard let (sliced, up) = VeRAModule.factors(a: a, aShape: aShape, b: b, bShape: bShape, lambdaB: lambdaB, lambdaD: lambdaD,
                                                    rank: rank, out: orientation.out, inputs: orientation.inputs) else {
            throw fail("the shared VeRA projections or its vectors do not fit the \(orientation.out)×\(orientation.inputs) weight")
        }
        addLowRank(&target, orientation: orientation, a: sliced, b: up, rank: rank, alpha: weight)
    }
}
