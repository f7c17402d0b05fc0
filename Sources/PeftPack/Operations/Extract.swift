import Foundation

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
        /// Tensors one checkpoint stores and the other does not that are no parameters (buffers,
        /// a tied head's stored copy): left out, not compared.
        public var ignored: [IgnoredTensor]
        /// Compared tensors that are equal.
        public var unchanged: Int
        public var parameters: Int
        public var packBytes: Int
        /// Bytes of the changed tensors in the fine-tune (what storing the delta densely costs).
        public var deltaBytes: Int
        public var seconds: Double
    }

    /// Plan (which tensors pair up and differ, what becomes of each) → compute (factor) → write
    /// (into the pack as each is made).
    public static func run(base baseFolder: String, finetuned finetunedFolder: String, output: String, options: Options,
                           progress: ((Int, Int) -> Void)? = nil) throws -> Report {
        let start = Date()
        try validate(options)
        try OutputDestination.claim(output, as: .file, force: options.force, inputs: [baseFolder, finetunedFolder])
        Merge.keepLargeAllocationsInHeap()
        let base = try BaseModel(folder: baseFolder)
        let finetuned = try Checkpoint(path: finetunedFolder)
        let classes = TensorClasses(identity: base.identity)
        let pairing = try Pairing(base: base, finetuned: finetuned, finetunedFolder: finetunedFolder, classes: classes)
        let changed = try changedTensors(pairing.compared, base: base.checkpoint, finetuned: finetuned, baseFolder: baseFolder, finetunedFolder: finetunedFolder)
        let plan = try Plan(changed: changed, base: base, classes: classes, options: options, baseFolder: baseFolder, finetunedFolder: finetunedFolder)
        let pack = try ExtractedPack(output: output, name: options.name, level: options.level, tiedHead: pairing.tiedHead)
        do {
            try compute(plan, base: base.checkpoint, finetuned: finetuned, options: options, into: pack) { progress?($0, plan.steps) }
            try pack.finish(base: base, baseFolder: baseFolder, finetunedFolder: finetunedFolder)
        } catch {
            pack.abandon()
            throw error
        }
        return Report(output: output, adapter: options.name, modules: pack.moduleReports,
                      fullTensors: (plan.whole + pack.tiedWhole).map { FullTensorReport(tensor: $0.name, mode: $0.mode.rawValue, reason: $0.reason, factorable: $0.factorable) },
                      skipped: plan.skipped + pack.leftOut, ignored: pairing.ignored, unchanged: pairing.compared.count - changed.count,
                      parameters: pack.parameters, packBytes: try PackReader(path: output).fileSize,
                      deltaBytes: changed.reduce(0) { $0 + (finetuned.info($1)?.byteCount ?? 0) }, seconds: Date().timeIntervalSince(start))
    }

    /// Factors the planned modules (one pass, or a budget's) and stores the whole tensors, each
    /// into the pack as it is made; `progress` counts the plan's steps done.
    static func compute(_ plan: Plan, base: Checkpoint, finetuned: Checkpoint, options: Options, into pack: ExtractedPack,
                        progress: (Int) -> Void) throws {
        var done = 0
        func advance(to finished: Int) {
            done = finished
            progress(finished)
        }
        if case .budget = options.rule {
            try factorWithinBudget(plan.lowRank, parameters: plan.lowRankBudget, passes: plan.passes, base: base,
                                   finetuned: finetuned, options: options, emit: pack.add, progress: advance)
        } else {
            try factorAll(plan.lowRank, base: base, finetuned: finetuned, options: options, emit: { try pack.add($1) }, progress: advance)
        }
        for entry in plan.whole {
            defer {
                base.releasePages(entry.name)
                finetuned.releasePages(entry.name)
                advance(to: done + 1)
            }
            try pack.add(entry, base: base, finetuned: finetuned)
        }
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
}
