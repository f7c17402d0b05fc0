import Foundation

/// `peftpack stack`: combines adapters of the same base into one.
///
/// LoRA family: exact concatenation, ΔW = Σ wᵢ·sᵢ·BᵢAᵢ = [w₁s₁B₁ … wₖsₖBₖ]·[A₁; …; Aₖ], with the
/// scales folded into B so the result is an ordinary LoRA with scaling 1 (alpha = rank). With a
/// target rank or energy, each module's sum is recompressed on the factors only: thin QR of the
/// stacked B and of the stacked Aᵀ, an SVD of the small core R_B·R_Aᵀ, and the leading triplets —
/// the optimal rank-R approximation of the exact sum without ever forming the out×in matrix.
/// IA3 vectors compose multiplicatively (v = Π vᵢ^wᵢ); dense deltas add; whole-tensor
/// replacements may come from one input only.
public enum Stack {
    /// One adapter (or every adapter of a pack) and its weight, as merge takes them.
    public typealias Input = MergeInput

    public enum Recompression: Equatable, Sendable {
        case none
        case rank(Int)
        case energy(Double)
        /// kohya's resize_lora.py dynamic methods on the singular values, capped at a rank.
        case singularValues(SingularValueCriterion, cap: Int?)
    }

    /// kohya-ss sd-scripts networks/resize_lora.py (`index_sv_*` and `rank_resize`), on ΔW's
    /// singular values s₁ ≥ s₂ ≥ …: the rank is at least 1 and at most the cap.
    public enum SingularValueCriterion: Equatable, Sendable {
        /// sv_ratio q: every sᵢ > s₁/q.
        case ratio(Double)
        /// sv_cumulative c: the first i with (s₁ + … + sᵢ) / Σs ≥ c.
        case cumulative(Double)
        /// sv_fro f: the first i with (s₁² + … + sᵢ²) / Σs² ≥ f².
        case frobenius(Double)

        func rank(_ s: [Float]) -> Int {
            guard let first = s.first else { return 0 }
            func firstReaching(_ values: [Double], _ target: Double) -> Int {
                let total = values.reduce(0, +)
                var running = 0.0
                for (index, value) in values.enumerated() {
                    running += value
                    if running / total >= target { return index + 1 }
                }
                return values.count
            }
            let found: Int
            switch self {
            case .ratio(let q): found = s.filter { Double($0) > Double(first) / q }.count
            case .cumulative(let c): found = firstReaching(s.map { Double($0) }, c)
            case .frobenius(let f): found = firstReaching(s.map { Double($0) * Double($0) }, f * f)
            }
            return max(1, min(found, s.count))
        }
    }

    public struct Options {
        public var recompression: Recompression
        public var name: String
        public var level: Int32
        /// Replace an existing output.
        public var force = false

        public init(recompression: Recompression = .none, name: String = "stacked", level: Int32 = 3) {
            self.recompression = recompression
            self.name = name
            self.level = level
        }
    }

    public struct ModuleReport: Encodable {
        public var target: String
        public var inputs: Int
        public var rank: Int
        /// Relative Frobenius error of the recompressed module against the exact sum (0 for cat).
        public var relativeError: Double
    }

    public struct Report: Encodable {
        public var output: String
        public var adapter: String
        public var kind: String
        public var inputs: [String]
        public var modules: [ModuleReport]
        public var parameters: Int
        public var seconds: Double
    }

    struct Source {
        var reader: PackReader
        var adapter: Adapter
        var weight: Double
        var label: String
    }

    public static func run(inputs: [Input], output: String, options: Options) throws -> Report {
        let start = Date()
        guard !inputs.isEmpty else { throw UsageError("give at least one pack to stack") }
        // The QRs and SVDs here are of thin or tiny matrices; OpenBLAS's threads only spin on them.
        let blasThreads = BLAS.threadCount
        BLAS.threadCount = 1
        defer { BLAS.threadCount = blasThreads }
        if case .rank(let rank) = options.recompression, rank <= 0 { throw UsageError("the recompression rank must be at least 1 (got \(rank))") }
        if case .energy(let share) = options.recompression, !(share > 0 && share <= 1) { throw UsageError("the recompression energy share must be in (0, 1] (got \(share))") }
        try OutputDestination.claim(output, as: .file, force: options.force, inputs: inputs.map(\.pack))
        let selection = try SelectedAdapters(inputs, allZeroWeights: "nothing to stack: every adapter's weight is 0, so the stacked adapter would change nothing")
        let sources = selection.entries.map { entry in
            let pack = selection.packs[entry.pack]
            return Source(reader: pack.reader, adapter: ModuleLayoutRule.correcting(entry.adapter, modelType: pack.document.base?.modelType),
                          weight: entry.weight, label: "\(pack.path):\(entry.adapter.name)")
        }
        let base = try BaseBinding.combine(selection.packs.map { ($0.document.base, $0.path) }, namesMayDiffer: false)
        let kinds = Set(sources.map(\.adapter.kind))
        guard kinds.count == 1, let kind = kinds.first else {
            throw UsageError("cannot stack adapters of different kinds (\(kinds.map(\.rawValue).sorted().joined(separator: ", "))) into one; stack each kind separately, or import them into one pack to apply them together")
        }
        guard kind.rules.stackable else { throw UsageError("\(kind.rawValue) adapters cannot be stacked") }
        if kind == .bottleneck { return try stackBottlenecks(sources, base: base, output: output, options: options, start: start) }
        // Large buffers come and go with every module; kept in the heap, they are reused instead
        // of being mapped and faulted in afresh (29 % of a 2B stack was the kernel doing that).
        Merge.keepLargeAllocationsInHeap()
        let pack = try StackedPack(destination: output, level: options.level)
        do {
            var modules: [AdapterModule] = []
            var reports: [ModuleReport] = []
            var settings = AdapterSettings()
            var source: AdapterSource?
            switch kind {
            case .lora:
                for source in sources where source.adapter.modules.contains(where: { $0.tensors[TensorRole.magnitude] != nil }) {
                    throw InputError(file: source.label, problem: "is a DoRA adapter: its magnitude vector rescales W + ΔW as a whole, so DoRA adapters do not add up; merge them into the base first (peftpack merge)")
                }
                try stackLowRank(sources, options: options, modules: &modules, reports: &reports, into: pack)
            case .ia3:
                try stackIA3(sources, name: options.name, modules: &modules, reports: &reports, into: pack)
            case .prefix, .prompt:
                (settings, source) = try stackVirtualTokens(sources, kind: kind, name: options.name, modules: &modules, reports: &reports, into: pack)
            case .full, .bottleneck, .loha, .lokr, .adalora, .vera:
                break
            }
            try stackWholeTensors(sources, name: options.name, modules: &modules, into: pack)
            let adapter = Adapter(name: options.name, kind: kind, source: source, settings: settings, modules: modules)
            try pack.finish(PackDocument(base: base, userMetadata: ["stacked_from": sources.map { "\($0.label)×\($0.weight)" }.joined(separator: ", ")],
                                         adapters: [adapter]))
            return Report(output: output, adapter: options.name, kind: kind.rawValue, inputs: sources.map(\.label), modules: reports,
                          parameters: pack.parameters, seconds: Date().timeIntervalSince(start))
        } catch {
            pack.abandon()
            throw error
        }
    }

    static func floats(_ source: Source, _ name: String) throws -> [Float] {
        try source.reader.readTensor(name).floats()
    }

    /// A factor to recompress: LAPACK's QR and SVD reject NaN and ±Inf with a bare argument
    /// number, so such a factor (kept on import with --allow-nonfinite) is refused first, by name.
    static func floats(_ source: Source, _ name: String, refusingNonFinite: Bool) throws -> [Float] {
        let tensor = try source.reader.readTensor(name)
        let values = tensor.floats()
        // Σx² (dsdot) is finite exactly when every value is; it is a fraction of the bit survey's
        // cost, which runs only to name what it found.
        if refusingNonFinite, !values.withUnsafeBufferPointer({ BLAS.squaredNorm($0) }).isFinite,
           let found = FiniteValues.survey(tensor, name: name, file: source.label) {
            throw NonFiniteError(kind: .inputTensor, description: "\(source.label): tensor \(name) holds \(NonFiniteCount(nan: found.nan, infinite: found.infinite).phrase) of its \(found.elements) elements, which cannot be recompressed to a lower rank; nothing was written")
        }
        return values
    }

    typealias LowRankPiece = (source: Source, module: AdapterModule, settings: LowRankModule)

    /// One target's stacked factors, A (rank × in) and B (out × rank), ready to write.
    struct StackedModule {
        var target: String
        var layout: WeightLayout
        var inputs: Int
        var a: Matrix
        var b: Matrix
        var biasSum: [Float]?
        var relativeError: Double
    }

    /// Every target stacked on its own core (OpenBLAS single-threaded: its threads only spin on
    /// these thin matrices) and written to the pack in target order as it is done, so memory
    /// holds a module per core, not the adapter.
    static func stackLowRank(_ sources: [Source], options: Options, modules: inout [AdapterModule],
                             reports: inout [ModuleReport], into pack: StackedPack) throws {
        let targets = lowRankPieces(sources)
        for (target, pieces) in targets {
            let layout = pieces[0].settings.layout
            if let other = pieces.first(where: { $0.settings.layout != layout }) {
                throw InputError(file: other.source.label, problem: "\(target) is a \(other.settings.layout.rawValue) module here but \(layout.rawValue) in \(pieces[0].source.label)")
            }
        }
        try OrderedParallel.forEach(count: targets.count, workers: Cores.active, work: { index in
            try stackModule(targets[index].target, targets[index].pieces, recompression: options.recompression)
        }, emit: { _, stacked in
            guard stacked.a.rows > 0 else { return }
            let module = try pack.add(stacked, adapter: options.name)
            modules.append(module)
            reports.append(ModuleReport(target: stacked.target, inputs: stacked.inputs, rank: stacked.a.rows, relativeError: stacked.relativeError))
        })
    }

    /// One target's factors concatenated and, if asked, recompressed.
    static func stackModule(_ target: String, _ pieces: [LowRankPiece], recompression: Recompression) throws -> StackedModule {
        let factors = try gatherFactors(target, pieces, recompressing: recompression != .none)
        let a = concatenate(factors.blocksA, inFeatures: factors.inFeatures)
        let recompressing = recompression != .none
        // Recompression factors B as a column-major matrix, so it is concatenated as Bᵀ.
        let b = concatenate(factors.blocksB, outFeatures: factors.outFeatures, transposed: recompressing)
        guard recompressing else {
            return StackedModule(target: target, layout: pieces[0].settings.layout, inputs: pieces.count, a: a, b: b,
                                 biasSum: factors.biasSum, relativeError: 0)
        }
        // Handed over, not shared: recompress factors them in place, and a copy-on-write copy of
        // both (1.8 % of a 2B stack) would be all that sharing bought.
        let (newA, newB, error) = try recompress(a: consume a, bTransposed: consume b, rule: recompression)
        return StackedModule(target: target, layout: pieces[0].settings.layout, inputs: pieces.count, a: newA, b: newB,
                             biasSum: factors.biasSum, relativeError: error)
    }
    /// Every low-rank module of the inputs grouped by target, targets in first-seen order.
    static func lowRankPieces(_ sources: [Source]) -> [(target: String, pieces: [LowRankPiece])] {
        var order: [String] = []
        var parts: [String: [LowRankPiece]] = [:]
        for source in sources {
            for module in source.adapter.modules {
                guard let settings = module.lowRank else { continue }
                if parts[module.target] == nil { order.append(module.target) }
                parts[module.target, default: []].append((source, module, settings))
            }
        }
        return order.map { ($0, parts[$0]!) }
    }

    struct GatheredFactors {
        var blocksA: [(values: [Float], rank: Int)] = []
        var blocksB: [(values: [Float], rank: Int, factor: Float)] = []
        var outFeatures = -1
        var inFeatures = -1
        var biasSum: [Float]?
    }

    /// One target's factors from every input, each B with its weight × scale, checked to agree in shape.
    static func gatherFactors(_ target: String, _ pieces: [LowRankPiece], recompressing: Bool) throws -> GatheredFactors {
        var gathered = GatheredFactors()
        for (source, module, settings) in pieces {
            guard let aName = module.tensors[TensorRole.loraA], let bName = module.tensors[TensorRole.loraB],
                  let aShape = source.reader.entry(named: aName)?.shape, let bShape = source.reader.entry(named: bName)?.shape,
                  aShape.count == 2, bShape.count == 2, aShape[0] == bShape[1] else {
                throw InputError(file: source.label, problem: "\(target) lacks LoRA factors of matching rank")
            }
            if gathered.outFeatures < 0 { (gathered.outFeatures, gathered.inFeatures) = (bShape[0], aShape[1]) }
            guard bShape[0] == gathered.outFeatures, aShape[1] == gathered.inFeatures else {
                throw InputError(file: source.label, problem: "\(target) is \(bShape[0])×\(aShape[1]) here but \(gathered.outFeatures)×\(gathered.inFeatures) in another input")
            }
            let factor = Float(source.weight * settings.scale)
            gathered.blocksA.append((try floats(source, aName, refusingNonFinite: recompressing), aShape[0]))
            gathered.blocksB.append((try floats(source, bName, refusingNonFinite: recompressing), bShape[1], factor))
            if let biasName = module.tensors[TensorRole.loraBBias] {
                let bias = try floats(source, biasName)
                gathered.biasSum = zip(gathered.biasSum ?? [Float](repeating: 0, count: bias.count), bias).map { $0 + factor * $1 }
            }
            if module.tensors[TensorRole.targetBias] != nil {
                throw InputError(file: source.label, problem: "\(target) carries a trained bias (PEFT bias=\"lora_only\"), which replaces the base's and does not add up; merge it instead")
            }
        }
        return gathered
    }

    /// A_cat = [A₁; …; Aₖ] (Σr × in).
    static func concatenate(_ blocks: [(values: [Float], rank: Int)], inFeatures: Int) -> Matrix {
        let total = blocks.reduce(0) { $0 + $1.rank }
        // Every element is written, so the buffer starts uninitialised.
        let values = [Float](unsafeUninitializedCapacity: total * inFeatures) { buffer, initialized in
            var offset = 0
            for block in blocks {
                _ = UnsafeMutableBufferPointer(rebasing: buffer[offset..<(offset + block.values.count)]).initialize(from: block.values)
                offset += block.values.count
            }
            initialized = total * inFeatures
        }
        return Matrix(rows: total, cols: inFeatures, values: values)
    }

    /// B_cat = [f₁B₁ … fₖBₖ] (out × Σr), each B scaled by its factor, or its transpose (Σr × out).
    static func concatenate(_ blocks: [(values: [Float], rank: Int, factor: Float)], outFeatures: Int, transposed: Bool) -> Matrix {
        let total = blocks.reduce(0) { $0 + $1.rank }
        // Every element is written, so the buffer starts uninitialised.
        let values = [Float](unsafeUninitializedCapacity: outFeatures * total) { buffer, initialized in
            var offset = 0
            for block in blocks {
                block.values.withUnsafeBufferPointer { source in
                    if transposed {
                        // A tile of rows at a time, so the source lines read for one column are
                        // still in L1 for the next (column by column over all rows they were not:
                        // this copy was 9 % of a 2B stack).
                        for first in stride(from: 0, to: outFeatures, by: 256) {
                            let rows = first..<min(first + 256, outFeatures)
                            for k in 0..<block.rank {
                                let column = (offset + k) * outFeatures
                                for row in rows { buffer[column + row] = block.factor * source[row * block.rank + k] }
                            }
                        }
                    } else {
                        for row in 0..<outFeatures {
                            for k in 0..<block.rank { buffer[row * total + offset + k] = block.factor * source[row * block.rank + k] }
                        }
                    }
                }
                offset += block.rank
            }
            initialized = outFeatures * total
        }
        return transposed ? Matrix(rows: total, cols: outFeatures, values: values) : Matrix(rows: outFeatures, cols: total, values: values)
    }

    /// The best rank-R (or energy-E) approximation of B·A from the factors alone, with its
    /// relative Frobenius error: B = Q_B·R_B, Aᵀ = Q_A·R_A, B·A = Q_B·(R_B·R_Aᵀ)·Q_Aᵀ, and the
    /// SVD of the small core. LAPACK is column-major, and the row-major k × in A is the
    /// column-major Aᵀ, the row-major k × out Bᵀ the column-major B: both are factored as they
    /// lie, both Q stay implicit and are applied to the small factors of the SVD, writing the new
    /// factors straight into row-major buffers, with no transposed copies.
    static func recompress(a: consuming Matrix, bTransposed: consuming Matrix, rule: Recompression) throws -> (a: Matrix, b: Matrix, relativeError: Double) {
        let k = a.rows, inFeatures = a.cols, outFeatures = bTransposed.cols
        let qrB = try bTransposed.values.withUnsafeMutableBufferPointer { try LAPACK.qrInPlace($0.baseAddress!, rows: outFeatures, cols: k) }
        let qrA = try a.values.withUnsafeMutableBufferPointer { try LAPACK.qrInPlace($0.baseAddress!, rows: inFeatures, cols: k) }
        let (u, s, vt) = try LAPACK.svd(core(qrB: bTransposed.values, qrA: a.values, k: k, outFeatures: outFeatures, inFeatures: inFeatures))
        let energies = s.map { Double($0) * Double($0) }
        let total = energies.reduce(0, +)
        let rank = keptRank(s, energies: energies, total: total, rule: rule)
        let roots = s.prefix(rank).map { $0.squareRoot() }
        // New B = Q_B·(U_R·√S) (out × R, row-major); new Aᵀ = Q_A·(V_R·√S) (in × R, column-major,
        // which is the row-major R × in A).
        var left = Matrix(zeros: u.rows, rank), right = Matrix(zeros: vt.cols, rank)
        for row in 0..<u.rows {
            for col in 0..<rank { left[row, col] = u[row, col] * roots[col] }
        }
        for row in 0..<vt.cols {
            for col in 0..<rank { right[row, col] = vt[col, row] * roots[col] }
        }
        let newB = [Float](unsafeUninitializedCapacity: outFeatures * rank) { buffer, initialized in
            bTransposed.values.withUnsafeBufferPointer { reflectors in
                qrB.leadingColumns(times: left, reflectors: reflectors.baseAddress!, rows: outFeatures, rowMajorResult: true, into: buffer.baseAddress!)
            }
            initialized = outFeatures * rank
        }
        let newA = [Float](unsafeUninitializedCapacity: inFeatures * rank) { buffer, initialized in
            a.values.withUnsafeBufferPointer { reflectors in
                qrA.leadingColumns(times: right, reflectors: reflectors.baseAddress!, rows: inFeatures, rowMajorResult: false, into: buffer.baseAddress!)
            }
            initialized = inFeatures * rank
        }
        let kept = energies.prefix(rank).reduce(0, +)
        return (Matrix(rows: rank, cols: inFeatures, values: newA), Matrix(rows: outFeatures, cols: rank, values: newB),
                total > 0 ? max(0, (total - kept) / total).squareRoot() : 0)
    }

    /// R_B·R_Aᵀ (row-major, min(k, out) × min(k, in)) from the factored buffers: R_B on and above
    /// the diagonal of the column-major out × k QR, R_A of the column-major in × k one. Their zero
    /// triangles are skipped.
    static func core(qrB: [Float], qrA: [Float], k: Int, outFeatures: Int, inFeatures: Int) -> Matrix {
        let rowsB = min(k, outFeatures), rowsA = min(k, inFeatures)
        var core = Matrix(zeros: rowsB, rowsA)
        for i in 0..<rowsB {
            for j in 0..<rowsA {
                var sum: Float = 0
                for l in max(i, j)..<k { sum += qrB[i + l * outFeatures] * qrA[j + l * inFeatures] }
                core[i, j] = sum
            }
        }
        return core
    }

    /// How many leading singular triplets the rule keeps (never an exactly zero one).
    static func keptRank(_ s: [Float], energies: [Double], total: Double, rule: Recompression) -> Int {
        var rank: Int
        switch rule {
        case .rank(let wanted): rank = min(wanted, s.count)
        case .energy(let share):
            rank = s.count
            var kept = 0.0
            for (index, energy) in energies.enumerated() {
                kept += energy
                if kept >= share * total * (1 - 1e-12) { rank = index + 1; break }
            }
        case .none: rank = s.count
        case .singularValues(let criterion, let cap): rank = min(criterion.rank(s), cap ?? s.count)
        }
        while rank > 0 && s[rank - 1] == 0 { rank -= 1 }
        return rank
    }

    static func stackIA3(_ sources: [Source], name: String, modules: inout [AdapterModule],
                         reports: inout [ModuleReport], into pack: StackedPack) throws {
        var order: [String] = []
        var combined: [String: (module: AdapterModule, vector: [Double], inputs: Int)] = [:]
        for source in sources {
            for module in source.adapter.modules where module.ia3 != nil {
                guard let vectorName = module.tensors[TensorRole.ia3Vector] else { continue }
                let vector = try floats(source, vectorName).map { pow(Double($0), source.weight) }
                if var existing = combined[module.target] {
                    guard existing.module.ia3?.side == module.ia3?.side, existing.vector.count == vector.count else {
                        throw InputError(file: source.label, problem: "IA3 module \(module.target) scales a different side or size than in another input")
                    }
                    existing.vector = zip(existing.vector, vector).map { $0 * $1 }
                    existing.inputs += 1
                    combined[module.target] = existing
                } else {
                    order.append(module.target)
                    combined[module.target] = (module, vector, 1)
                }
            }
        }
        for target in order {
            let entry = combined[target]!
            let vectorName = AdapterModule.tensorName(adapter: name, target: target, role: TensorRole.ia3Vector)
            var module = entry.module
            module.tensors = [TensorRole.ia3Vector: vectorName]
            modules.append(module)
            try pack.add(vectorName, HostTensor(floats: entry.vector.map { Float($0) }, shape: [entry.vector.count], dtype: .f32))
            reports.append(ModuleReport(target: target, inputs: entry.inputs, rank: 0, relativeError: 0))
        }
    }

    /// Prefix tuning: per layer, the keys and values of every input one after another, so
    /// attention runs over the union of the prefixes (exactly what applying the inputs together
    /// does). Prompt tuning: the virtual tokens one after another. Virtual tokens cannot be scaled,
    /// so every weight must be 1. The first input's PEFT config is kept with the new token count.
    static func stackVirtualTokens(_ sources: [Source], kind: AdapterKind, name: String, modules: inout [AdapterModule],
                                   reports: inout [ModuleReport], into pack: StackedPack) throws -> (AdapterSettings, AdapterSource?) {
        for source in sources where source.weight != 1 {
            throw InputError(file: source.label, problem: "\(kind.rawValue) adapters add virtual tokens, which cannot be scaled; stack them with weight 1 (got \(source.weight))")
        }
        let first = sources[0].adapter.settings
        for source in sources.dropFirst() {
            let settings = source.adapter.settings
            guard settings.numLayers == first.numLayers, settings.numKeyValueHeads == first.numKeyValueHeads,
                  settings.headDim == first.headDim, settings.tokenDim == first.tokenDim else {
                throw InputError(file: source.label, problem: "has other dimensions (layers, heads, head size or token width) than \(sources[0].label)")
            }
        }
        let roles = kind == .prefix ? [TensorRole.prefixKeys, TensorRole.prefixValues] : [TensorRole.promptEmbeddings]
        let targets = sources[0].adapter.modules.map { ($0.target, $0.change) }
        var tokens = 0
        for (target, change) in targets {
            var module = AdapterModule(target: target, change: change)
            for role in roles {
                var parts: [HostTensor] = []
                for source in sources {
                    guard let tensorName = source.adapter.modules.first(where: { $0.target == target })?.tensors[role] else {
                        throw InputError(file: source.label, problem: "has no \(role) for \(target)")
                    }
                    parts.append(try source.reader.readTensor(tensorName))
                }
                let rowShape = Array(parts[0].shape.dropFirst())
                guard parts.allSatisfy({ Array($0.shape.dropFirst()) == rowShape }) else {
                    throw InputError(file: sources[0].label, problem: "\(target) \(role) tensors of the inputs differ in shape beyond the token count")
                }
                let rows = parts.reduce(0) { $0 + $1.shape[0] }
                let joined: HostTensor
                if Set(parts.map(\.dtype)).count == 1 {
                    joined = HostTensor(dtype: parts[0].dtype, shape: [rows] + rowShape, bytes: parts.flatMap(\.bytes))
                } else {
                    joined = HostTensor(floats: parts.flatMap { $0.floats() }, shape: [rows] + rowShape, dtype: .f32)
                }
                tokens = rows
                let stored = AdapterModule.tensorName(adapter: name, target: target, role: role)
                module.tensors[role] = stored
                try pack.add(stored, joined)
            }
            modules.append(module)
            reports.append(ModuleReport(target: target, inputs: sources.count, rank: 0, relativeError: 0))
        }
        var settings = first
        settings.numVirtualTokens = tokens
        return (settings, try withTokenCount(sources[0].adapter.source, tokens: tokens, label: sources[0].label))
    }

    /// The first input's source with its stored PEFT config saying the stacked token count.
    static func withTokenCount(_ source: AdapterSource?, tokens: Int, label: String) throws -> AdapterSource? {
        guard var source, let text = source.configText else { return source }
        let config: StrictJSON
        do {
            config = try StrictJSON.parse(Array(text.utf8))
        } catch {
            throw InputError(file: label, problem: "its stored adapter_config.json is not valid JSON (\(error))")
        }
        if var members = config.objectMembers {
            members.removeAll { $0.key == "num_virtual_tokens" }
            members.append(("num_virtual_tokens", .integer(Int64(tokens))))
            let data = try JSONSerialization.data(withJSONObject: StrictJSON.object(members).foundationObject,
                                                  options: [.prettyPrinted, .sortedKeys])
            source.configText = String(decoding: data, as: UTF8.self) + "\n"
        }
        return source
    }

    /// Bottleneck adapters compose as AdapterHub's Stack: each block runs on the previous one's
    /// output, which no single bottleneck can express. The output pack holds the inputs in order
    /// as adapters NAME.0, NAME.1, …; the runtime applies a pack's bottleneck adapters in that
    /// order at every site (AdapterHub's `Stack`), and each exports to its own AdapterHub folder
    /// (`export --name NAME.i`) to be activated as `Stack(NAME.0, NAME.1, …)`, as the pack's
    /// `composition` metadata records.
    static func stackBottlenecks(_ sources: [Source], base: BaseModelIdentity?, output: String, options: Options, start: Date) throws -> Report {
        for source in sources where source.weight != 1 {
            throw InputError(file: source.label, problem: "bottleneck adapters compose by running one after another, which has no weight; stack them with weight 1 (got \(source.weight))")
        }
        var adapters: [Adapter] = []
        var tensors: [(name: String, tensor: HostTensor)] = []
        var reports: [ModuleReport] = []
        for (index, source) in sources.enumerated() {
            var adapter = source.adapter
            adapter.name = "\(options.name).\(index)"
            for position in adapter.modules.indices {
                for (role, tensorName) in adapter.modules[position].tensors {
                    let stored = AdapterModule.tensorName(adapter: adapter.name, target: adapter.modules[position].target, role: role)
                    tensors.append((stored, try source.reader.readTensor(tensorName)))
                    adapter.modules[position].tensors[role] = stored
                }
                reports.append(ModuleReport(target: "\(adapter.name)/\(adapter.modules[position].target)", inputs: 1, rank: 0, relativeError: 0))
            }
            adapters.append(adapter)
        }
        let composition = "Stack(" + adapters.map(\.name).joined(separator: ", ") + ")"
        let document = PackDocument(base: base, userMetadata: ["stacked_from": sources.map(\.label).joined(separator: ", "), "composition": composition],
                                    adapters: adapters)
        for (name, tensor) in tensors {
            try tensor.bytes.withUnsafeBytes { try FiniteValues.checkResult($0, dtype: tensor.dtype, name: name, what: "the stacked tensor") }
        }
        try PackWriter.write(tensors, document: document, to: output, options: .init(level: options.level))
        return Report(output: output, adapter: composition, kind: AdapterKind.bottleneck.rawValue, inputs: sources.map(\.label), modules: reports,
                      parameters: tensors.reduce(0) { $0 + $1.tensor.elementCount }, seconds: Date().timeIntervalSince(start))
    }

    /// Dense deltas add (weighted); a replacement tensor may come from one input only, at weight 1.
    static func stackWholeTensors(_ sources: [Source], name: String, modules: inout [AdapterModule],
                                  into pack: StackedPack) throws {
        var replaced: [String: String] = [:]
        var deltas: [String: (values: [Float], shape: [Int])] = [:]
        var deltaOrder: [String] = []
        for source in sources {
            for module in source.adapter.modules {
                guard let whole = module.wholeTensor, let tensorName = module.tensors[TensorRole.fullValue] else { continue }
                let value = try source.reader.readTensor(tensorName)
                if whole.effect != .delta {
                    if let owner = replaced[module.target] {
                        throw InputError(file: source.label, problem: "replaces \(module.target) whole, and so does \(owner); the two cannot both apply")
                    }
                    guard source.weight == 1 else {
                        throw InputError(file: source.label, problem: "replaces \(module.target) whole, which only stacks at weight 1 (got \(source.weight))")
                    }
                    replaced[module.target] = source.label
                    let stored = AdapterModule.tensorName(adapter: name, target: module.target, role: TensorRole.fullValue)
                    modules.append(AdapterModule(target: module.target, change: .wholeTensor(WholeTensorModule(whole.effect)),
                                                 tensors: [TensorRole.fullValue: stored]))
                    try pack.add(stored, value)
                } else {
                    let scaled = value.floats().map { Float(source.weight) * $0 }
                    if let existing = deltas[module.target] {
                        guard existing.shape == value.shape else {
                            throw InputError(file: source.label, problem: "dense delta of \(module.target) has another shape than in another input")
                        }
                        deltas[module.target] = (zip(existing.values, scaled).map { $0 + $1 }, value.shape)
                    } else {
                        deltaOrder.append(module.target)
                        deltas[module.target] = (scaled, value.shape)
                    }
                }
            }
        }
        for target in deltaOrder {
            if let owner = replaced[target] {
                throw InputError(file: owner, problem: "replaces \(target) whole while another input changes it by a delta")
            }
            let stored = AdapterModule.tensorName(adapter: name, target: target, role: TensorRole.fullValue)
            modules.append(AdapterModule(target: target, change: .wholeTensor(WholeTensorModule(.delta)), tensors: [TensorRole.fullValue: stored]))
            try pack.add(stored, HostTensor(floats: deltas[target]!.values, shape: deltas[target]!.shape, dtype: .f32))
        }
    }
}
