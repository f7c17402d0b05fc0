import Foundation

/// IA3: learned per-feature scaling of one side of a weight (spec/FORMAT.md §9.6).
public struct IA3Module: Sendable, Equatable {
    public var layout: WeightLayout
    public var side: IA3Side

    public init(layout: WeightLayout, side: IA3Side) {
        self.layout = layout
        self.side = side
    }
}

/// Which side of the weight an IA3 vector scales.
public enum IA3Side: String, Codable, Sendable {
    /// Scales the input features: W' = W · diag(v) (PEFT's feed-forward modules).
    case input
    /// Scales the output features: W' = diag(v) · W.
    case output
}

extension IA3Module {
    public static let rules = KindRules(
        requiredRoles: [TensorRole.ia3Vector], optionalRoles: [],
        mergeable: true, addedComputation: nil, stackable: true, exports: [.peft])
}

// MARK: Run time

extension AdapterSet {
    mutating func addIA3(_ module: AdapterModule, _ settings: IA3Module, _ source: AdapterTensors) throws {
        try source.checkRoles(of: module)
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
}

// MARK: Merge

extension MergeArithmetic {
    /// IA3: scales the input features (side input) or output features (side output) by v^w, so
    /// weight −1 divides exactly what weight 1 multiplied. `isBias` applies the output scaling to
    /// a bias vector.
    static func applyIA3(_ target: inout [Double], orientation: WeightOrientation?, vector: [Double], side: IA3Side, weight: Double) {
        let factors = vector.map { weight == 1 ? $0 : pow($0, weight) }
        guard let orientation else {
            for index in target.indices { target[index] *= factors[index] }
            return
        }
        for o in 0..<orientation.out {
            for i in 0..<orientation.inputs {
                target[orientation.offset(o, i)] *= side == .input ? factors[i] : factors[o]
            }
        }
    }
}
