import Foundation

/// `convert --to lora` of the kinds whose change depends on the base weight: DoRA, where
/// W' = diag(m / ‖W + s·B·A‖) · (W + s·B·A), and IA3, where W' = W · diag(v) or diag(v) · W.
/// Their ΔW = W' − W is formed one module at a time in fp64 from the base, exactly as merge forms
/// W' (MergeArithmetic), and factored by extract's truncated SVD: the best rank-R approximation
/// of the true change. (PEFT's convert_to_lora takes get_delta_weight, which for DoRA is s·B·A
/// alone: it drops the magnitude.)
extension Convert {
    /// Whether a module's ΔW needs the base weight.
    static func needsBase(_ module: AdapterModule) -> Bool {
        switch module.change {
        case .lowRank: module.tensors[TensorRole.magnitude] != nil
        case .ia3: true
        default: false
        }
    }

    /// The base a conversion reads, checked to be the one the pack was made for.
    static func boundBase(_ folder: String, document: PackDocument, adapter: Adapter, reader: PackReader, file: String) throws -> BaseModel {
        let base = try BaseModel(folder: folder)
        let binding = BaseBinding(base: base, level: .content)
        try binding.add(document.base, targets: base.targets(of: adapter), all: document.adapters,
                        shapes: { reader.entry(named: $0)?.shape }, file: file)
        try binding.checkRemainingContent()
        return base
    }

    static func extractRule(_ rule: Rule, module: String, file: String) throws -> Extract.RankRule {
        switch rule {
        case .rank(let rank): return .fixed(rank)
        case .energy(let share): return .energy(share)
        case .maxError(let error): return .maxError(error)
        case .exact, .singularValues:
            throw InputError(file: file, problem: "module \(module)'s ΔW depends on the base weight and is full rank in general, so its LoRA needs a rank, an energy share or an error bound", kind: .notExpressible)
        }
    }

    /// ΔW = W' − W of a DoRA or IA3 module, factored to the rule's rank.
    static func factorWithBase(_ module: AdapterModule, base: BaseModel, reader: PackReader, rule: Rule, file: String) throws -> (Stack.StackedModule, ModuleReport) {
        guard let layout = module.layout, layout != .embedding else {
            throw InputError(file: file, problem: "module \(module.target) is not a linear layer; convert rewrites linear layers", kind: .notExpressible)
        }
        guard let name = base.resolve(module.target + ".weight"), let info = base.info(name), info.shape.count == 2 else {
            throw InputError(file: file, problem: "module \(module.target) has no 2-D weight in the base at \(base.folder)")
        }
        func floats(_ role: String) throws -> [Double] { try reader.readTensor(module.tensors[role]!).floats().map(Double.init) }
        let original: [Double] = try base.checkpoint.tensor(base.storedName(name)).floats().map(Double.init)
        var changed = original
        let orientation = WeightOrientation(storedShape: info.shape, layout: layout)
        switch module.change {
        case .lowRank(let settings):
            MergeArithmetic.applyDoRA(&changed, orientation: orientation, a: try floats(TensorRole.loraA), b: try floats(TensorRole.loraB),
                                      rank: settings.rank, scale: settings.scale, magnitude: try floats(TensorRole.magnitude), weight: 1)
        case .ia3(let settings):
            if settings.side == .output, base.resolve(module.target + ".bias") != nil {
                throw InputError(file: file, problem: "module \(module.target) is IA3 on the output side of a layer with a bias, which it scales too and a LoRA cannot", kind: .notExpressible)
            }
            MergeArithmetic.applyIA3(&changed, orientation: orientation, vector: try floats(TensorRole.ia3Vector), side: settings.side, weight: 1)
        default:
            preconditionFailure("needsBase admits DoRA and IA3 modules only")
        }
        var energy = 0.0
        let delta = zip(changed, original).map { changed, original -> Float in
            let difference = changed - original
            energy += difference * difference
            return Float(difference)
        }
        let candidate = Extract.Candidate(tensor: module.target, shape: info.shape, layout: layout,
                                          delta: Matrix(rows: info.shape[0], cols: info.shape[1], values: delta), totalEnergy: energy)
        let options = Extract.Options(rule: try extractRule(rule, module: module.target, file: file))
        let factored = try Extract.factor(candidate, options: options, seed: 0)
        let (a, b) = Extract.loraFactors(factored.triplets, rank: factored.rank, layout: layout)
        let error = Extract.relativeError(factored.triplets, rank: factored.rank, totalEnergy: energy)
        let stacked = Stack.StackedModule(target: module.target, layout: layout, inputs: 1, a: a, b: b, biasSum: nil, relativeError: error)
        let full = min(info.shape[0], info.shape[1])
        return (stacked, ModuleReport(target: module.target, factoredRank: full, rank: factored.rank, relativeError: error,
                                      energyKept: max(0, 1 - error * error)))
    }
}
