import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `peftpack extract`: turns a full fine-tune into a LoRA pack. Every changed 2-D weight's delta
/// ΔW = W_ft − W_base (fp32) is factored by a truncated SVD, ΔW ≈ U·S·Vᵀ, and stored as
/// B = U·√S, A = √S·Vᵀ with alpha = rank (scaling 1), so PEFT, merge and the runtime all apply
/// exactly B·A. Embeddings and 1-D tensors, which low rank would ruin, are stored whole by default.
public enum Extract {
    public enum RankRule: Equatable {
        case fixed(Int)
        /// Smallest rank keeping this share of ‖ΔW‖²_F.
        case energy(Double)
        /// Smallest rank with ‖ΔW − BA‖_F ≤ x·‖ΔW‖_F.
        case maxError(Double)
        /// Ranks chosen across all modules to remove the most squared error per parameter, within
        /// this many parameters for the whole pack.
        case budget(parameters: Int)
    }

    public enum EmbeddingPolicy: String, CaseIterable, Sendable { case lora, full, skip }
    public enum OtherPolicy: String, CaseIterable, Sendable { case full, delta, skip }

    public struct Options {
        public var rule: RankRule
        public var maxRank: Int?
        public var include: [String]
        public var exclude: [String]
        public var embeddings: EmbeddingPolicy
        public var other: OtherPolicy
        public var exact: Bool
        public var oversample: Int
        public var powerIterations: Int
        public var seed: UInt64
        public var name: String
        public var level: Int32
        /// Replace an existing output.
        public var force = false
        /// Bytes of factors a budget may keep from its first pass before it switches to two passes.
        public var budgetFactorAllowance = Extract.budgetFactorAllowance

        public init(rule: RankRule = .fixed(16), maxRank: Int? = nil, include: [String] = [], exclude: [String] = [],
                    embeddings: EmbeddingPolicy = .full, other: OtherPolicy = .full, exact: Bool = false,
                    oversample: Int = 8, powerIterations: Int = 2, seed: UInt64 = 0, name: String = "extracted", level: Int32 = 3) {
            self.rule = rule
            self.maxRank = maxRank
            self.include = include
            self.exclude = exclude
            self.embeddings = embeddings
            self.other = other
            self.exact = exact
            self.oversample = oversample
            self.powerIterations = powerIterations
            self.seed = seed
            self.name = name
            self.level = level
        }
    }

    public struct ModuleReport: Encodable {
        public var tensor: String
        public var shape: [Int]
        public var rank: Int
        public var energyKept: Double
        public var relativeError: Double
        public var method: String
    }

    public struct FullTensorReport: Encodable {
        public var tensor: String
        public var mode: String
        public var reason: String
        /// An embedding or output head kept whole by the embeddings policy, which could be factored
        /// instead (not in the JSON: `reason` says it).
        public var factorable: Bool

        enum CodingKeys: String, CodingKey { case tensor, mode, reason }
    }

    /// A parameter budget that the tensors stored whole already exceed.
    public struct BudgetTooSmallError: UserFacingError {
        public var budget: Int
        public var wholeParameters: Int

        public var description: String {
            "a budget of \(budget) parameters is smaller than the \(wholeParameters) parameters of the tensors stored whole (embeddings, norms, biases)"
        }
    }

    public struct Report: Encodable {
        public var output: String
        public var adapter: String
        public var modules: [ModuleReport]
        public var fullTensors: [FullTensorReport]
        public var skipped: [String]
        public var unchanged: Int
        public var parameters: Int
        public var packBytes: Int
        /// Bytes of the changed tensors in the fine-tune (what storing the delta densely costs).
        public var deltaBytes: Int
        public var seconds: Double
    }

    /// One 2-D weight to factor, in the orientation the SVD sees (the stored one).
    struct Candidate {
        var tensor: String
        var shape: [Int]
        var layout: WeightLayout
        var delta: Matrix
        var totalEnergy: Double
    }

    struct Factored {
        var candidate: Candidate
        var triplets: SingularTriplets
        var rank: Int
    }

    public static func run(base baseFolder: String, finetuned finetunedFolder: String, output: String, options: Options,
                           progress: ((Int, Int) -> Void)? = nil) throws -> Report {
        let start = Date()
        try validate(options)
        try OutputDestination.claim(output, as: .file, force: options.force, inputs: [baseFolder, finetunedFolder])
        Merge.keepLargeAllocationsInHeap()
        let base = try BaseModel(folder: baseFolder)
        let finetuned = try Checkpoint(path: finetunedFolder)
        // A tied fine-tune's head is its embedding, while an adapter's embedding reaches only the
        // input side (the runtime and PEFT keep the head on the base weight): it needs a head too.
        let tiedHead = try tiedHeadToExtract(base: base, finetuned: finetuned, finetunedFolder: finetunedFolder)
        let changedNames = try changedTensors(base: base.checkpoint, finetuned: finetuned, baseFolder: baseFolder, finetunedFolder: finetunedFolder)
        var skipped: [String] = []
        var fullTensors: [(name: String, mode: FullTensorMode, reason: String, factorable: Bool)] = []
        var lowRankNames: [(name: String, layout: WeightLayout)] = []
        for name in changedNames {
            guard selected(name, options: options) else {
                skipped.append(name)
                continue
            }
            let info = base.checkpoint.info(name)!
            let embedding = isEmbedding(name)
            if info.shape.count == 2 && info.dtype.isFloatingPoint && name.hasSuffix(".weight") && !(embedding && options.embeddings != .lora) {
                let layout: WeightLayout = isTokenEmbedding(name) ? .embedding
                    : ModuleLayoutRule.layout(of: String(name.dropLast(".weight".count)), modelType: base.identity.modelType)
                lowRankNames.append((name, layout))
            } else if embedding && info.shape.count == 2 {
                if options.embeddings == .skip { skipped.append(name) } else {
                    fullTensors.append((name, .replace, "embedding/output head: low rank would lose most of it", true))
                }
            } else {
                switch options.other {
                case .skip: skipped.append(name)
                case .full: fullTensors.append((name, .replace, info.shape.count == 2 ? "not a linear weight" : "\(info.shape.count)-D tensor (norm or bias): stored whole", false))
                case .delta: fullTensors.append((name, .delta, info.shape.count == 2 ? "not a linear weight" : "\(info.shape.count)-D tensor (norm or bias): stored as a dense delta", false))
                }
            }
        }
        guard !lowRankNames.isEmpty || !fullTensors.isEmpty else {
            throw InputError(file: finetunedFolder, problem: "every tensor that differs from \(baseFolder) is excluded or skipped: nothing to extract")
        }

        var passes = 1
        var lowRankBudget = 0
        if case .budget(let budget) = options.rule {
            let fullParameters = fullTensors.reduce(0) { $0 + (base.checkpoint.info($1.name)!.elementCount ?? 0) }
            lowRankBudget = budget - fullParameters
            guard lowRankBudget >= 0 else {
                throw BudgetTooSmallError(budget: budget, wholeParameters: fullParameters)
            }
            passes = budgetPasses(lowRankNames.map { base.checkpoint.info($0.name)!.shape }, options: options)
        }
        let total = passes * lowRankNames.count + fullTensors.count
        var done = 0
        var modules: [AdapterModule] = []
        var moduleReports: [ModuleReport] = []
        var shapes: [String: [Int]] = [:]
        var parameters = 0
        // Tensors go into the pack as they are made, so memory holds a few modules' factors, not
        // the adapter (which grows with the model); the header, written last, gets the document.
        let writer = try PackWriter(destination: output, options: .init(level: options.level))
        func append(_ name: String, dtype: DType, shape: [Int], bytes: UnsafeRawBufferPointer) throws {
            try FiniteValues.checkResult(bytes, dtype: dtype, name: name, what: "the extracted tensor (the fine-tune or the base holds NaN/Inf there)")
            try writer.append(name: name, dtype: dtype, shape: shape, bytes: bytes)
            shapes[name] = shape
            parameters += shape.reduce(1, *)
        }
        func emit(_ item: Factored) throws {
            guard item.rank > 0 else {
                skipped.append(item.candidate.tensor)
                return
            }
            let (a, b) = loraFactors(item.triplets, rank: item.rank, layout: item.candidate.layout)
            let target = String(item.candidate.tensor.dropLast(".weight".count))
            let aName = AdapterModule.tensorName(adapter: options.name, target: target, role: TensorRole.loraA)
            let bName = AdapterModule.tensorName(adapter: options.name, target: target, role: TensorRole.loraB)
            try a.values.withUnsafeBytes { try append(aName, dtype: .f32, shape: [a.rows, a.cols], bytes: $0) }
            try b.values.withUnsafeBytes { try append(bName, dtype: .f32, shape: [b.rows, b.cols], bytes: $0) }
            modules.append(AdapterModule(target: target, layout: item.candidate.layout, rank: item.rank, scale: 1,
                                         tensors: [TensorRole.loraA: aName, TensorRole.loraB: bName]))
            let kept = item.triplets.s.prefix(item.rank).reduce(0.0) { $0 + Double($1) * Double($1) }
            let energy = item.candidate.totalEnergy > 0 ? min(1, kept / item.candidate.totalEnergy) : 1
            var report = ModuleReport(tensor: item.candidate.tensor, shape: item.candidate.shape, rank: item.rank,
                                      energyKept: energy, relativeError: relativeError(item.triplets, rank: item.rank, totalEnergy: item.candidate.totalEnergy),
                                      method: item.triplets.exact ? "exact" : "randomized")
            moduleReports.append(report)
            if let tie = tiedHead, item.candidate.tensor == tie.embedding {
                // The head is the embedding read as a linear layer [vocab, dim]: its ΔW is the
                // embedding's stored delta (B·A)ᵀ = Aᵀ·Bᵀ, so A_head = Bᵀ and B_head = Aᵀ.
                let (headA, headB) = (b.transposed, a.transposed)
                let headTarget = String(tie.head.dropLast(".weight".count))
                let headAName = AdapterModule.tensorName(adapter: options.name, target: headTarget, role: TensorRole.loraA)
                let headBName = AdapterModule.tensorName(adapter: options.name, target: headTarget, role: TensorRole.loraB)
                try headA.values.withUnsafeBytes { try append(headAName, dtype: .f32, shape: [headA.rows, headA.cols], bytes: $0) }
                try headB.values.withUnsafeBytes { try append(headBName, dtype: .f32, shape: [headB.rows, headB.cols], bytes: $0) }
                modules.append(AdapterModule(target: headTarget, layout: .linear, rank: item.rank, scale: 1,
                                             tensors: [TensorRole.loraA: headAName, TensorRole.loraB: headBName]))
                report.tensor = tie.head
                moduleReports.append(report)
            }
        }
        do {
            if case .budget = options.rule {
                try factorWithinBudget(lowRankNames, parameters: lowRankBudget, passes: passes, base: base.checkpoint,
                                       finetuned: finetuned, options: options, emit: emit, progress: { finished in
                    done = finished
                    progress?(finished, total)
                })
            } else {
                try factorAll(lowRankNames, base: base.checkpoint, finetuned: finetuned, options: options,
                              emit: { try emit($1) }, progress: { finished in
                    done = finished
                    progress?(finished, total)
                })
            }
            for entry in fullTensors {
                defer {
                    base.checkpoint.releasePages(entry.name)
                    finetuned.releasePages(entry.name)
                    done += 1
                    progress?(done, total)
                }
                let shape = base.checkpoint.info(entry.name)!.shape
                // The bias of a factored linear travels with its module (PEFT's bias="lora_only").
                if entry.mode == .replace, entry.name.hasSuffix(".bias"),
                   let owner = modules.firstIndex(where: { $0.mode == nil && $0.target + ".bias" == entry.name }) {
                    let name = AdapterModule.tensorName(adapter: options.name, target: modules[owner].target, role: TensorRole.targetBias)
                    let dtype = finetuned.info(entry.name)!.dtype
                    try finetuned.withBytes(entry.name) { try append(name, dtype: dtype, shape: shape, bytes: $0) }
                    modules[owner].tensors[TensorRole.targetBias] = name
                    continue
                }
                let name = AdapterModule.tensorName(adapter: options.name, target: entry.name, role: TensorRole.fullValue)
                if entry.mode == .replace {
                    let dtype = finetuned.info(entry.name)!.dtype
                    try finetuned.withBytes(entry.name) { try append(name, dtype: dtype, shape: shape, bytes: $0) }
                } else {
                    let delta = zip(try finetuned.tensor(entry.name).floats(), try base.checkpoint.tensor(entry.name).floats()).map { $0 - $1 }
                    try delta.withUnsafeBytes { try append(name, dtype: .f32, shape: shape, bytes: $0) }
                }
                modules.append(AdapterModule(target: entry.name, mode: entry.mode, tensors: [TensorRole.fullValue: name]))
                if let tie = tiedHead, entry.name == tie.embedding {
                    // The same stored tensor, so the head follows the embedding as the fine-tune's does.
                    modules.append(AdapterModule(target: tie.head, mode: entry.mode, tensors: [TensorRole.fullValue: name]))
                    fullTensors.append((tie.head, entry.mode, "tied to \(tie.embedding) in the base and the fine-tune: the head is the fine-tuned embedding", false))
                }
            }
            guard !modules.isEmpty else {
                throw UsageError("the budget leaves no rank for any module: nothing to extract")
            }
            let adapter = Adapter(name: options.name, kind: .lora, modules: modules)
            let targeted = try base.check(adapter, shapes: { shapes[$0] }, file: output)
            var identity = try base.identity(binding: targeted)
            identity.nameOrPath = baseFolder
            let document = PackDocument(base: identity, userMetadata: ["extracted_from": finetunedFolder], adapters: [adapter])
            try writer.finish(document: try StrictJSON.encoding(document))
        } catch {
            writer.abandon()
            throw error
        }
        let deltaBytes = changedNames.reduce(0) { $0 + (finetuned.info($1)?.byteCount ?? 0) }
        return Report(output: output, adapter: options.name, modules: moduleReports,
                      fullTensors: fullTensors.map { FullTensorReport(tensor: $0.name, mode: $0.mode.rawValue, reason: $0.reason, factorable: $0.factorable) },
                      skipped: skipped, unchanged: base.checkpoint.names.count - changedNames.count, parameters: parameters,
                      packBytes: try PackReader(path: output).fileSize, deltaBytes: deltaBytes, seconds: Date().timeIntervalSince(start))
    }

    /// A budget needs every module's spectrum before any rank is known. While the factors up to
    /// the cap fit in the allowance they are kept from that pass (1 pass); beyond it (large
    /// models) only the spectra are kept and the modules given a rank are factored again
    /// (2 passes), which keeps memory flat at about 1.6× the time.
    static func budgetPasses(_ shapes: [[Int]], options: Options) -> Int {
        let kept = shapes.reduce(0) { $0 + ($1[0] + $1[1]) * min($1[0], $1[1], options.maxRank ?? 256) * 4 }
        return kept > options.budgetFactorAllowance ? 2 : 1
    }

    /// Factors every delta, ranks them together within `parameters` (allocateBudget) and hands
    /// each module, with its rank (0: left out), to `emit` in module order. `progress` counts the
    /// matrices factored over both passes.
    static func factorWithinBudget(_ names: [(name: String, layout: WeightLayout)], parameters: Int, passes: Int,
                                   base: Checkpoint, finetuned: Checkpoint, options: Options,
                                   emit: (Factored) throws -> Void, progress: (Int) -> Void) throws {
        var factored: [Factored] = []
        try factorAll(names, base: base, finetuned: finetuned, options: options, emit: { _, item in
            var kept = item
            if passes == 2 {
                kept.triplets = SingularTriplets(u: Matrix(zeros: 0, 0), s: item.triplets.s, vt: Matrix(zeros: 0, 0), exact: item.triplets.exact)
            }
            factored.append(kept)
        }, progress: progress)
        allocateBudget(&factored, parameters: parameters)
        if passes == 1 {
            for index in factored.indices {
                let item = factored[index]
                try emit(Factored(candidate: item.candidate, triplets: truncate(item.triplets, to: item.rank), rank: item.rank))
                factored[index].triplets = SingularTriplets(u: Matrix(zeros: 0, 0), s: [], vt: Matrix(zeros: 0, 0), exact: false)
            }
            return
        }
        let ranked = factored.indices.filter { factored[$0].rank > 0 }
        var next = 0
        try factorAll(ranked.map { names[$0] }, base: base, finetuned: finetuned, options: options,
                      ranks: ranked.map { factored[$0].rank }, seeds: ranked, emit: { position, item in
            // Modules left out still pass through `emit`, in their place.
            while next < ranked[position] { try emit(factored[next]); next += 1 }
            try emit(item)
            next += 1
        }, progress: { progress(names.count + $0) })
        while next < factored.count { try emit(factored[next]); next += 1 }
        progress(2 * names.count)
    }

    /// Factors every delta, one matrix per core at a time with single-threaded BLAS: the
    /// matrices are too thin (k = rank + oversample) for OpenBLAS's threads to pay off, and the
    /// conversions, subtraction and QR between the products parallelise this way too. Each result
    /// goes to `emit` in the order of `names` (so the pack does not depend on which core finished
    /// first) as soon as its predecessors have; memory holds one delta per core plus the results
    /// waiting for a slower predecessor.
    /// `ranks`: a fixed rank per name instead of the options' rule (the second pass of a budget);
    /// `seeds`: the position each name's random sketch is seeded by (its place among all modules).
    static func factorAll(_ names: [(name: String, layout: WeightLayout)], base: Checkpoint, finetuned: Checkpoint, options: Options,
                          ranks: [Int]? = nil, seeds: [Int]? = nil,
                          emit: (Int, Factored) throws -> Void, progress: (Int) -> Void) throws {
        let blasThreads = BLAS.threadCount
        BLAS.threadCount = 1
        defer { BLAS.threadCount = blasThreads }
        let lock = NSLock()
        var next = 0, finished = 0, nextToEmit = 0
        var waiting: [Int: Factored] = [:]
        var failure: Error?
        let workers = max(1, min(ProcessInfo.processInfo.activeProcessorCount, names.count))
        DispatchQueue.concurrentPerform(iterations: workers) { _ in
            while true {
                lock.lock()
                let index = next
                next += 1
                let failed = failure != nil
                lock.unlock()
                guard index < names.count, !failed else { return }
                let entry = names[index]
                let result = Result { () throws -> Factored in
                    let candidate = try loadCandidate(entry.name, layout: entry.layout, base: base, finetuned: finetuned)
                    base.releasePages(entry.name)
                    finetuned.releasePages(entry.name)
                    // Seeded by position, so the result does not depend on which core ran it.
                    var moduleOptions = options
                    if let ranks { moduleOptions.rule = .fixed(ranks[index]) }
                    let position = seeds?[index] ?? index
                    var factored = try factor(candidate, options: moduleOptions, seed: options.seed &+ UInt64(position) &* 0x9E37_79B9_7F4A_7C15)
                    if case .budget = moduleOptions.rule {} else { factored.triplets = truncate(factored.triplets, to: factored.rank) }
                    // Only the triplets are kept: holding every delta would cost the model.
                    factored.candidate.delta = Matrix(zeros: 0, 0)
                    return factored
                }
                lock.lock()
                defer { lock.unlock() }
                switch result {
                case .failure(let error): failure = failure ?? error
                case .success(let factored): waiting[index] = factored
                }
                while failure == nil, let ready = waiting.removeValue(forKey: nextToEmit) {
                    do { try emit(nextToEmit, ready) } catch { failure = error }
                    nextToEmit += 1
                }
                finished += 1
                progress(finished)
            }
        }
        if let failure { throw failure }
    }

    /// Bytes of factors a budget may keep from its first pass (see `run`).
    public static let budgetFactorAllowance = 1 << 30

    static func validate(_ options: Options) throws {
        switch options.rule {
        case .fixed(let rank) where rank <= 0: throw UsageError("the rank must be at least 1 (got \(rank))")
        case .energy(let share) where !(share > 0 && share <= 1): throw UsageError("the energy share must be in (0, 1] (got \(share))")
        case .maxError(let error) where !(error >= 0 && error < 1): throw UsageError("the relative error must be in [0, 1) (got \(error))")
        case .budget(let parameters) where parameters <= 0: throw UsageError("the parameter budget must be positive (got \(parameters))")
        default: break
        }
        if let maxRank = options.maxRank, maxRank <= 0 { throw UsageError("the rank cap must be at least 1 (got \(maxRank))") }
        if options.oversample < 0 { throw UsageError("the oversampling must not be negative (got \(options.oversample))") }
        if options.powerIterations < 0 { throw UsageError("the power iterations must not be negative (got \(options.powerIterations))") }
    }

    /// Names of the tensors that differ, after checking the two checkpoints have the same tensors
    /// and shapes.
    /// The base's tie when the fine-tune keeps it; a fine-tune that stores a head of its own on a
    /// tied base is refused naming the tie.
    static func tiedHeadToExtract(base: BaseModel, finetuned: Checkpoint, finetunedFolder: String) throws -> EmbeddingTie? {
        guard let tie = base.tie else { return nil }
        let config = finetuned.configText.flatMap { try? StrictJSON.parse(Array($0.utf8)) }
        guard EmbeddingTie(config: config, tensorNames: Set(finetuned.names)) != nil, finetuned.info(tie.head) == nil else {
            throw InputError(file: finetunedFolder, problem: "has its own \(tie.head) (tie_word_embeddings false) but the base \(base.folder) ties it to \(tie.embedding); extract from a base saved untied (tie_word_embeddings false, lm_head.weight a copy of the embedding)")
        }
        return tie
    }

    static func changedTensors(base: Checkpoint, finetuned: Checkpoint, baseFolder: String, finetunedFolder: String) throws -> [String] {
        let baseNames = Set(base.names), finetunedNames = Set(finetuned.names)
        if let extra = finetunedNames.subtracting(baseNames).sorted().first {
            throw InputError(file: finetunedFolder, problem: "has tensor \(extra), which \(baseFolder) lacks: the two checkpoints are not the same architecture")
        }
        if let missing = baseNames.subtracting(finetunedNames).sorted().first {
            throw InputError(file: finetunedFolder, problem: "lacks tensor \(missing), which \(baseFolder) has: the two checkpoints are not the same architecture")
        }
        var changed: [String] = []
        for name in base.names {
            let a = base.info(name)!, b = finetuned.info(name)!
            guard a.shape == b.shape else {
                throw InputError(file: finetunedFolder, problem: "tensor \(name) is \(Shape.describe(b.shape)) but \(Shape.describe(a.shape)) in \(baseFolder): the two checkpoints are not the same architecture")
            }
            let same: Bool
            if a.dtype == b.dtype {
                same = try sameBytes(name, base, finetuned)
            } else {
                same = try base.tensor(name).floats() == finetuned.tensor(name).floats()
            }
            base.releasePages(name)
            finetuned.releasePages(name)
            if !same { changed.append(name) }
        }
        guard !changed.isEmpty else {
            throw InputError(file: finetunedFolder, problem: "is identical to \(baseFolder) (every tensor equal): nothing to extract")
        }
        return changed
    }

    /// Compares a tensor of two checkpoints window by window, dropping the pages behind, so the
    /// largest tensor (an embedding) is never resident whole in either.
    static func sameBytes(_ name: String, _ first: Checkpoint, _ second: Checkpoint) throws -> Bool {
        try first.withBytes(name) { x in
            try second.withBytes(name) { y in
                guard x.count == y.count else { return false }
                let window = SafetensorsFile.streamWindow
                var offset = 0
                while offset < x.count {
                    let count = min(window, x.count - offset)
                    let equal = memcmp(x.baseAddress! + offset, y.baseAddress! + offset, count) == 0
                    first.releasePages(name, bytes: offset..<(offset + count))
                    second.releasePages(name, bytes: offset..<(offset + count))
                    if !equal { return false }
                    offset += count
                }
                return true
            }
        }
    }

    static func selected(_ name: String, options: Options) -> Bool {
        func matches(_ pattern: String) -> Bool { fnmatch(pattern, name, 0) == 0 }
        if !options.include.isEmpty && !options.include.contains(where: matches) { return false }
        return !options.exclude.contains(where: matches)
    }

    static let tokenEmbeddingNames = ["embed_tokens", "wte", "wpe", "word_embeddings", "position_embeddings", "token_type_embeddings",
                                      "embed_positions", "shared"]
    static let outputHeadNames = ["lm_head", "embed_out"]

    static func components(_ name: String) -> [Substring] { name.split(separator: ".") }

    static func isTokenEmbedding(_ name: String) -> Bool {
        components(name).contains { tokenEmbeddingNames.contains(String($0)) }
    }

    static func isEmbedding(_ name: String) -> Bool {
        isTokenEmbedding(name) || components(name).contains { outputHeadNames.contains(String($0)) }
    }

    static func loadCandidate(_ name: String, layout: WeightLayout, base: Checkpoint, finetuned: Checkpoint) throws -> Candidate {
        let info = base.info(name)!, count = info.elementCount ?? 0
        // ΔW in one fp32 array, filled a window at a time straight from the two mapped files, whose
        // pages are dropped behind: per core, one tensor-sized array is all the memory it takes.
        let finetunedType = finetuned.info(name)!.dtype, baseType = base.info(name)!.dtype
        let window = 1 << 18
        var scratch = [Float](repeating: 0, count: min(window, count))
        let values = try [Float](unsafeUninitializedCapacity: count) { delta, initialized in
            try finetuned.withBytes(name) { tuned in
                try base.withBytes(name) { original in
                    scratch.withUnsafeMutableBufferPointer { widenedBase in
                        var start = 0
                        while start < count {
                            let n = min(window, count - start)
                            let tunedBytes = (start * finetunedType.byteSize)..<((start + n) * finetunedType.byteSize)
                            let baseBytes = (start * baseType.byteSize)..<((start + n) * baseType.byteSize)
                            DTypeConversion.toFloat32(UnsafeRawBufferPointer(rebasing: tuned[tunedBytes]), dtype: finetunedType,
                                                      into: UnsafeMutableBufferPointer(rebasing: delta[start..<(start + n)]))
                            DTypeConversion.toFloat32(UnsafeRawBufferPointer(rebasing: original[baseBytes]), dtype: baseType,
                                                      into: UnsafeMutableBufferPointer(rebasing: widenedBase[0..<n]))
                            for index in 0..<n { delta[start + index] -= widenedBase[index] }
                            finetuned.releasePages(name, bytes: tunedBytes)
                            base.releasePages(name, bytes: baseBytes)
                            start += n
                        }
                    }
                }
            }
            initialized = count
        }
        let energy = values.withUnsafeBufferPointer { BLAS.squaredNorm($0) }
        if !energy.isFinite {
            // NaN/Inf reach the squared norm; LAPACK would refuse the matrix with a bare code.
            try values.withUnsafeBytes { try FiniteValues.checkResult($0, dtype: .f32, name: name, what: "ΔW = fine-tune − base (the fine-tune or the base holds NaN/Inf there)") }
        }
        return Candidate(tensor: name, shape: info.shape, layout: layout,
                         delta: Matrix(rows: info.shape[0], cols: info.shape[1], values: values), totalEnergy: energy)
    }

    /// Factors one delta and picks its rank under a per-matrix rule (for a budget, the rank is
    /// decided later across all modules; the triplets kept are the cap).
    static func factor(_ candidate: Candidate, options: Options, seed: UInt64) throws -> Factored {
        let smaller = min(candidate.delta.rows, candidate.delta.cols)
        let cap = min(smaller, options.maxRank ?? smaller)
        func sketch(_ width: Int) throws -> SingularTriplets {
            options.exact ? try TruncatedSVD.exact(candidate.delta)
                : try TruncatedSVD.randomized(candidate.delta, rank: width, oversample: options.oversample,
                                              powerIterations: options.powerIterations, seed: seed)
        }
        switch options.rule {
        case .fixed(let rank):
            let rank = min(rank, cap)
            return Factored(candidate: candidate, triplets: try sketch(rank), rank: rank)
        case .budget:
            let width = min(cap, options.maxRank ?? 256)
            return Factored(candidate: candidate, triplets: try sketch(width), rank: width)
        case .energy, .maxError:
            var width = min(cap, 64)
            while true {
                let triplets = try sketch(width)
                // Only the first `width` values of a randomized sketch are trusted; an exact SVD
                // has them all.
                let trusted = triplets.exact ? min(cap, triplets.s.count) : min(width, triplets.s.count)
                if case .maxError(let error) = options.rule {
                    let errors = relativeErrors(triplets, totalEnergy: candidate.totalEnergy)
                    if let rank = errors.indices.dropFirst().prefix(trusted).first(where: { errors[$0] <= error }) {
                        return Factored(candidate: candidate, triplets: triplets, rank: rank)
                    }
                } else if case .energy(let share) = options.rule {
                    let target = share * candidate.totalEnergy
                    var kept = 0.0
                    for (index, value) in triplets.s.prefix(trusted).enumerated() {
                        kept += Double(value) * Double(value)
                        if kept >= target * (1 - 1e-12) {
                            return Factored(candidate: candidate, triplets: triplets, rank: index + 1)
                        }
                    }
                }
                if triplets.exact || width >= cap {
                    return Factored(candidate: candidate, triplets: triplets, rank: trusted)
                }
                width = min(cap, 2 * width)
            }
        }
    }

    /// ‖ΔW − B·A‖_F / ‖ΔW‖_F of the rank-`rank` truncation, in fp64. With every singular value at
    /// hand it is √(Σ_{i>r} sᵢ²) / √(Σ sᵢ²) (Eckart–Young) from the discarded values themselves:
    /// √(1 − kept/total) cancels near full rank, where fp32 singular values leave ~1e-7 of noise
    /// in the ratio, so it reported 3e-4…7e-4 for a true 1e-6. A randomized sketch has only the
    /// leading values, so its error is what they leave of the total, √(1 − kept/total).
    static func relativeError(_ triplets: SingularTriplets, rank: Int, totalEnergy: Double) -> Double {
        relativeErrors(triplets, totalEnergy: totalEnergy)[min(rank, triplets.s.count)]
    }

    /// `relativeError` for every rank 0…s.count at once, index = rank.
    static func relativeErrors(_ triplets: SingularTriplets, totalEnergy: Double) -> [Double] {
        let squares = triplets.s.map { Double($0) * Double($0) }
        if triplets.exact {
            var discarded = [Double](repeating: 0, count: squares.count + 1)
            // From the smallest value up, so each tail is summed from its own terms.
            for rank in squares.indices.reversed() { discarded[rank] = discarded[rank + 1] + squares[rank] }
            let total = discarded[0]
            return discarded.map { total > 0 ? ($0 / total).squareRoot() : 0 }
        }
        var errors: [Double] = []
        var kept = 0.0
        for rank in 0...squares.count {
            errors.append(totalEnergy > 0 ? max(0, 1 - kept / totalEnergy).squareRoot() : 0)
            if rank < squares.count { kept += squares[rank] }
        }
        return errors
    }

    /// The leading `rank` singular vectors. Every singular value stays: the truncation's error is
    /// computed from the discarded ones (`relativeError`).
    static func truncate(_ triplets: SingularTriplets, to rank: Int) -> SingularTriplets {
        guard rank < triplets.u.cols else { return triplets }
        var u = Matrix(zeros: triplets.u.rows, rank)
        for row in 0..<u.rows {
            for col in 0..<rank { u[row, col] = triplets.u[row, col] }
        }
        let vt = Matrix(rows: rank, cols: triplets.vt.cols, values: Array(triplets.vt.values.prefix(rank * triplets.vt.cols)))
        return SingularTriplets(u: u, s: triplets.s, vt: vt, exact: triplets.exact)
    }

    /// Greedy allocation: every singular value removes s² of squared error for (rows + cols)
    /// parameters; taking them in order of s²/(rows + cols) while they fit is optimal for this
    /// separable problem (each module's gains decrease with rank, so the order keeps prefixes).
    static func allocateBudget(_ factored: inout [Factored], parameters: Int) {
        var items: [(gain: Double, module: Int, cost: Int)] = []
        for (module, item) in factored.enumerated() {
            let cost = item.candidate.shape[0] + item.candidate.shape[1]
            let trusted = item.triplets.exact ? item.rank : min(item.rank, item.triplets.s.count)
            for value in item.triplets.s.prefix(trusted) {
                items.append((Double(value) * Double(value) / Double(cost), module, cost))
            }
        }
        items.sort { $0.gain > $1.gain }
        var ranks = [Int](repeating: 0, count: factored.count)
        var remaining = parameters
        for item in items where item.cost <= remaining {
            ranks[item.module] += 1
            remaining -= item.cost
        }
        for index in factored.indices { factored[index].rank = ranks[index] }
    }

    /// B (out×r) and A (r×in) in PEFT's orientation from the stored-orientation SVD, with √S on
    /// each side. For layouts stored transposed (Conv1D, embeddings) the stored delta is (B·A)ᵀ, so
    /// U and V swap roles.
    static func loraFactors(_ triplets: SingularTriplets, rank: Int, layout: WeightLayout) -> (a: Matrix, b: Matrix) {
        let roots = triplets.s.prefix(rank).map { $0.squareRoot() }
        var left = Matrix(zeros: triplets.u.rows, rank)          // U·√S
        for row in 0..<left.rows {
            for col in 0..<rank { left[row, col] = triplets.u[row, col] * roots[col] }
        }
        var right = Matrix(zeros: rank, triplets.vt.cols)       // √S·Vᵀ
        for row in 0..<rank {
            for col in 0..<right.cols { right[row, col] = triplets.vt[row, col] * roots[row] }
        }
        if layout == .linear { return (a: right, b: left) }
        return (a: left.transposed, b: right.transposed)
    }
}
