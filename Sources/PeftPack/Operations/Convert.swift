import Foundation

/// `peftpack convert --to lora`: an adapter whose ΔW is low rank by construction, rewritten as a
/// plain LoRA from its own factors, never a dense out×in matrix:
/// - LoHa's (W1a·W1b) ⊙ (W2a·W2b) is the rank-r² product B·A with B's columns W1a[:, i] ⊙ W2a[:, j]
///   and A's rows W1b[i, :] ⊙ W2b[j, :] (the face-splitting products);
/// - LoKr's W1 ⊗ W2 with each side L·R (its two factors, or a side stored whole against an
///   identity on its shorter dimension) is (L1 ⊗ L2)·(R1 ⊗ R2);
/// - a LoRA is its own factors (a new rank for it).
/// Each module is then recompressed as `stack` does (thin QR of B and Aᵀ, SVD of the small core):
/// the optimal rank-R approximation of ΔW (Eckart–Young), reported with its relative Frobenius
/// error and the share of ‖ΔW‖²_F kept. Whole tensors the adapter carries are kept as they are.
public enum Convert {
    public enum Rule: Equatable, Sendable {
        /// Every non-zero singular value: the exact ΔW, at its true rank.
        case exact
        case rank(Int)
        /// The smallest rank keeping this share of ‖ΔW‖²_F.
        case energy(Double)
        /// The smallest rank whose relative Frobenius error is at most this.
        case maxError(Double)
        /// kohya's resize_lora.py criteria, at most `cap`.
        case singularValues(Stack.SingularValueCriterion, cap: Int?)

        var maxErrorLimit: Double? {
            if case .maxError(let error) = self { return error }
            return nil
        }

        var recompression: Stack.Recompression {
            switch self {
            case .exact: .none
            case .rank(let rank): .rank(rank)
            case .energy(let share): .energy(share)
            case .maxError(let error): .energy(1 - error * error)
            case .singularValues(let criterion, let cap): .singularValues(criterion, cap: cap)
            }
        }
    }

    public struct Options: Sendable {
        public var rule: Rule
        public var level: Int32
        public var force = false
        /// `resize`: the adapter must already be a LoRA.
        public var loraOnly = false
        /// The base model folder, for the kinds whose change depends on the base weight.
        public var base: String?

        public init(rule: Rule = .exact, level: Int32 = 3) {
            self.rule = rule
            self.level = level
        }
    }

    public struct ModuleReport: Encodable {
        public var target: String
        /// The rank of the exact factorization the source kind gives (r for LoRA, r² for LoHa,
        /// the product of the sides' ranks for LoKr): an upper bound on ΔW's rank.
        public var factoredRank: Int
        public var rank: Int
        public var relativeError: Double
        public var energyKept: Double
    }

    public struct Report: Encodable {
        public var output: String
        public var adapter: String
        public var from: String
        public var modules: [ModuleReport]
        public var wholeTensors: Int
        public var parameters: Int
        public var seconds: Double
    }

    /// One module as exact factors: Aᵀ's source (k × in, row-major) and Bᵀ (k × out), scale folded in.
    struct Factored {
        var target: String
        /// How the base stores the weight (a LoRA or AdaLoRA on GPT-2's Conv1D stays conv1d).
        var layout: WeightLayout = .linear
        var a: Matrix
        var bTransposed: Matrix
    }

    public static func run(pack: String, adapterName: String?, output: String, options: Options) throws -> Report {
        let start = Date()
        if case .rank(let rank) = options.rule, rank < 1 { throw UsageError("the rank must be at least 1 (got \(rank))") }
        if case .energy(let share) = options.rule, !(share > 0 && share <= 1) { throw UsageError("the energy share must be in (0, 1] (got \(share))") }
        if case .maxError(let error) = options.rule, !(error >= 0 && error < 1) { throw UsageError("the relative error must be in [0, 1) (got \(error))") }
        try OutputDestination.claim(output, as: .file, force: options.force, inputs: [pack])
        let reader = try PackReader(path: pack)
        let document = try reader.adapterDocument()
        let adapter = try SelectedAdapters.adapter(named: adapterName, in: document, file: pack)
        if options.loraOnly && adapter.kind != .lora {
            throw InputError(file: pack, problem: "adapter \(adapter.name) is \(adapter.kind.rawValue), not a LoRA; resize takes LoRA adapters (convert rewrites LoHa and LoKr as LoRA)", kind: .notExpressible)
        }
        let lowRank = adapter.modules.filter { !$0.isWholeTensor }
        for module in lowRank where !(options.base != nil && needsBase(module)) { try checkConvertible(module, adapter: adapter, file: pack) }
        if options.base != nil, let module = lowRank.first(where: needsBase) { _ = try extractRule(options.rule, module: module.target, file: pack) }
        let base = try options.base.map { try boundBase($0, document: document, adapter: adapter, reader: reader, file: pack) }
        // Thin QRs and tiny SVDs: OpenBLAS's threads would only spin on them.
        let blasThreads = BLAS.threadCount
        BLAS.threadCount = 1
        defer { BLAS.threadCount = blasThreads }
        Merge.keepLargeAllocationsInHeap()

        let out = try StackedPack(destination: output, level: options.level)
        do {
            var modules: [AdapterModule] = []
            var reports: [ModuleReport] = []
            try OrderedParallel.forEach(count: lowRank.count, workers: Cores.active, work: { index -> (Stack.StackedModule, ModuleReport) in
                if let base, needsBase(lowRank[index]) {
                    return try factorWithBase(lowRank[index], base: base, reader: reader, rule: options.rule, file: pack)
                }
                let recorded = document.base?.tensors?[lowRank[index].target + ".weight"]?.shape
                let factored = try factors(of: lowRank[index], reader: reader, recordedShape: recorded, file: pack)
                let k = factored.a.rows
                let (a, b, error) = try Stack.recompress(a: factored.a, bTransposed: factored.bTransposed, rule: options.rule.recompression)
                if let limit = options.rule.maxErrorLimit, error > limit * (1 + 1e-9) {
                    throw InputError(file: pack, problem: "module \(factored.target) cannot meet relative error \(limit): its best is \(error) at rank \(a.rows)")
                }
                let stacked = Stack.StackedModule(target: factored.target, layout: factored.layout, inputs: 1, a: a, b: b, biasSum: nil, relativeError: error)
                return (stacked, ModuleReport(target: factored.target, factoredRank: k, rank: a.rows, relativeError: error, energyKept: max(0, 1 - error * error)))
            }, emit: { _, result in
                let (stacked, report) = result
                reports.append(report)
                // A module whose ΔW is exactly zero has nothing to store.
                guard stacked.a.rows > 0 else { return }
                modules.append(try out.add(stacked, adapter: adapter.name))
            })
            var wholeTensors = 0
            for module in adapter.modules where module.isWholeTensor {
                guard let whole = module.wholeTensor, let stored = module.tensors[TensorRole.fullValue] else { continue }
                let name = AdapterModule.tensorName(adapter: adapter.name, target: module.target, role: TensorRole.fullValue)
                try out.add(name, try reader.readTensor(stored))
                modules.append(AdapterModule(target: module.target, change: .wholeTensor(whole), tensors: [TensorRole.fullValue: name]))
                wholeTensors += 1
            }
            let converted = Adapter(name: adapter.name, kind: .lora, modules: modules)
            var metadata = document.userMetadata ?? [:]
            metadata["converted_from"] = "\(pack):\(adapter.name) (\(adapter.kind.rawValue))"
            try out.finish(PackDocument(base: document.base, userMetadata: metadata, adapters: [converted]))
            let isDoRA = adapter.modules.contains { $0.tensors[TensorRole.magnitude] != nil }
            return Report(output: output, adapter: adapter.name, from: isDoRA ? "dora" : adapter.kind.rawValue, modules: reports, wholeTensors: wholeTensors,
                          parameters: out.parameters, seconds: Date().timeIntervalSince(start))
        } catch {
            out.abandon()
            throw error
        }
    }

    /// What `convert` turns into a LoRA without the base: LoRA itself, LoHa and LoKr on linear
    /// layers. DoRA, IA3 and OFT change W by amounts that depend on W.
    static func checkConvertible(_ module: AdapterModule, adapter: Adapter, file: String) throws {
        switch module.change {
        case .lowRank(let settings):
            if module.tensors[TensorRole.magnitude] != nil {
                throw InputError(file: file, problem: "adapter \(adapter.name) is DoRA, whose ΔW depends on the base weight: convert it with its base", kind: .needsBaseModel)
            }
            if module.tensors[TensorRole.loraBBias] != nil || module.tensors[TensorRole.targetBias] != nil {
                throw InputError(file: file, problem: "adapter \(adapter.name) trains the bias of \(module.target), which a LoRA's factors do not hold", kind: .notExpressible)
            }
            guard settings.layout != .embedding else {
                throw InputError(file: file, problem: "adapter \(adapter.name) adapts the embedding \(module.target); convert rewrites linear layers", kind: .notExpressible)
            }
        case .loha, .lokr:
            return
        case .adalora, .vera:
            return
        case .ia3:
            throw InputError(file: file, problem: "adapter \(adapter.name) is IA3, which scales W itself: convert it with its base", kind: .needsBaseModel)
        case .bottleneck, .prefix, .prompt:
            throw InputError(file: file, problem: "adapter \(adapter.name) is a \(adapter.kind.rawValue) adapter, which adds computation rather than a ΔW; it has no LoRA form", kind: .notExpressible)
        case .wholeTensor:
            return
        }
    }

    /// (scale · B)ᵀ [rank, out] of a row-major B [out, rank]: the Bᵀ recompress factors.
    static func transposed(_ b: [Float], out: Int, rank: Int, scale: Double) -> Matrix {
        var bT = [Float](repeating: 0, count: rank * out)
        let factor = Float(scale)
        for o in 0..<out { for j in 0..<rank { bT[j * out + o] = factor * b[o * rank + j] } }
        return Matrix(rows: rank, cols: out, values: bT)
    }

    /// A module's exact factors, read from the pack.
    /// `recordedShape`: the base weight's stored shape as the pack records it (VeRA's slices need
    /// the layer's input features, which its own tensors do not give).
    static func factors(of module: AdapterModule, reader: PackReader, recordedShape: [Int]?, file: String) throws -> Factored {
        func floats(_ role: String) throws -> [Float] { try reader.readTensor(module.tensors[role]!).floats() }
        func shape(_ role: String) throws -> [Int] {
            guard let name = module.tensors[role], let entry = reader.entry(named: name) else {
                throw InputError(file: file, problem: "module \(module.target) has no \(role) tensor")
            }
            return entry.shape
        }
        func fail(_ problem: String) -> Error { InputError(file: file, problem: "module \(module.target): \(problem)") }
        switch module.change {
        case .lowRank(let settings):
            let aShape = try shape(TensorRole.loraA), bShape = try shape(TensorRole.loraB)
            guard aShape.count == 2, bShape.count == 2, aShape[0] == settings.rank, bShape[1] == settings.rank else {
                throw fail("LoRA factors \(Shape.describe(aShape)) and \(Shape.describe(bShape)) are not of rank \(settings.rank)")
            }
            return Factored(target: module.target, layout: settings.layout, a: Matrix(rows: settings.rank, cols: aShape[1], values: try floats(TensorRole.loraA)),
                            bTransposed: transposed(try floats(TensorRole.loraB), out: bShape[0], rank: settings.rank, scale: settings.scale))
        case .vera(let settings):
            guard let stored = recordedShape, stored.count == 2 else {
                throw InputError(file: file, problem: "module \(module.target) is VeRA, whose slices of the shared projections need the layer's shape, which this pack does not record: import it with its base", kind: .baseNotRecorded)
            }
            let orientation = WeightOrientation(storedShape: stored, layout: settings.layout)
            guard let (a, b) = VeRAModule.factors(a: try floats(TensorRole.loraA), aShape: try shape(TensorRole.loraA), b: try floats(TensorRole.loraB),
                                                  bShape: try shape(TensorRole.loraB), lambdaB: try floats(TensorRole.veraLambdaB),
                                                  lambdaD: try floats(TensorRole.veraLambdaD), rank: settings.rank,
                                                  out: orientation.out, inputs: orientation.inputs) else {
                throw fail("the shared VeRA projections or its vectors do not fit the layer")
            }
            return Factored(target: module.target, layout: settings.layout, a: Matrix(rows: settings.rank, cols: orientation.inputs, values: a),
                            bTransposed: transposed(b, out: orientation.out, rank: settings.rank, scale: 1))
        case .adalora(let settings):
            let aShape = try shape(TensorRole.loraA), bShape = try shape(TensorRole.loraB)
            guard aShape.count == 2, bShape.count == 2, aShape[0] == settings.rank, bShape[1] == settings.rank else {
                throw fail("AdaLoRA factors \(Shape.describe(aShape)) and \(Shape.describe(bShape)) are not of rank \(settings.rank)")
            }
            let a = AdaLoRAModule.scaledRows(try floats(TensorRole.loraA), singularValues: try floats(TensorRole.singularValues), inputs: aShape[1])
            return Factored(target: module.target, layout: settings.layout, a: Matrix(rows: settings.rank, cols: aShape[1], values: a),
                            bTransposed: transposed(try floats(TensorRole.loraB), out: bShape[0], rank: settings.rank, scale: settings.scale))
        case .loha(let settings):
            let w1a = try shape(TensorRole.hadamardW1A), w1b = try shape(TensorRole.hadamardW1B)
            guard w1a.count == 2, w1b.count == 2,
                  LoHaModule.shapes(rank: settings.rank, out: w1a[0], inputs: w1b[1]) == [
                    TensorRole.hadamardW1A: w1a, TensorRole.hadamardW1B: w1b,
                    TensorRole.hadamardW2A: try shape(TensorRole.hadamardW2A), TensorRole.hadamardW2B: try shape(TensorRole.hadamardW2B)] else {
                throw fail("LoHa factors do not fit rank \(settings.rank)")
            }
            let (a, bT) = LoHaModule.lowRankFactors(w1a: try floats(TensorRole.hadamardW1A), w1b: try floats(TensorRole.hadamardW1B),
                                                    w2a: try floats(TensorRole.hadamardW2A), w2b: try floats(TensorRole.hadamardW2B),
                                                    rank: settings.rank, out: w1a[0], inputs: w1b[1], scale: settings.scale)
            return Factored(target: module.target, a: a, bTransposed: bT)
        case .lokr(let settings):
            let roles = Set(module.tensors.keys)
            let sides = try [1, 2].map { side in
                try LoKrModule.sideFactors(side: side, roles: roles, rank: settings.rank, shape: shape, values: floats, fail: fail)
            }
            let (a, bT) = LoKrModule.lowRankFactors(sides[0], sides[1], scale: settings.scale)
            return Factored(target: module.target, a: a, bTransposed: bT)
        default:
            preconditionFailure("checkConvertible admits LoRA, LoHa and LoKr modules only")
        }
    }
}
