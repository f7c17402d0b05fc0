import Foundation
#if canImport(Glibc)
import Glibc
#endif

extension Extract {
    /// A tensor one of the two checkpoints stores that extract leaves out, and why.
    public struct IgnoredTensor: Encodable, Equatable {
        public var tensor: String
        public var reason: String
    }

    /// Which tensors of the base and the fine-tune are compared, which are left out and what the
    /// pair cannot give, from names, shapes and configs alone (no tensor is read). Checkpoints
    /// saved by different transformers versions differ by buffers (BERT's position ids, rotary
    /// `inv_freq`, GPT-2's causal masks) and by a stored copy of a tied head; neither is a
    /// parameter the model loads, so the pair is the same model. A parameter on one side only is not.
    struct Pairing {
        /// Tensors both store, with the same shape, in the base's order.
        var compared: [String]
        /// Tensors one side stores and the other does not, left out.
        var ignored: [IgnoredTensor]
        /// The base's tie, which the fine-tune keeps: its head is its embedding.
        var tiedHead: EmbeddingTie?

        init(base: BaseModel, finetuned: Checkpoint, finetunedFolder: String, classes: TensorClasses) throws {
            tiedHead = try Self.keptTie(base: base, finetuned: finetuned, finetunedFolder: finetunedFolder)
            let tie = tiedHead
            func leftOut(_ name: String) -> String? {
                if let tie, name == tie.head { return "tied to \(tie.embedding) in both checkpoints, so the head is the embedding" }
                return classes.isBuffer(name) ? "a buffer the model recomputes, not a parameter" : nil
            }
            let baseNames = Set(base.checkpoint.names), finetunedNames = Set(finetuned.names)
            ignored = base.checkpoint.names.filter { !finetunedNames.contains($0) }.compactMap { name in
                leftOut(name).map { IgnoredTensor(tensor: name, reason: "\($0); only the base stores it") }
            } + finetuned.names.filter { !baseNames.contains($0) }.compactMap { name in
                leftOut(name).map { IgnoredTensor(tensor: name, reason: "\($0); only the fine-tune stores it") }
            }
            let notCompared = Set(ignored.map(\.tensor))
            if let extra = finetunedNames.subtracting(baseNames).subtracting(notCompared).sorted().first {
                throw InputError(file: finetunedFolder, problem: "has tensor \(extra), which \(base.folder) lacks: the two checkpoints are not the same architecture")
            }
            if let missing = baseNames.subtracting(finetunedNames).subtracting(notCompared).sorted().first {
                throw InputError(file: finetunedFolder, problem: "lacks tensor \(missing), which \(base.folder) has: the two checkpoints are not the same architecture")
            }
            // Stored on both sides, buffers and a tied head's copy are still not parameters.
            compared = base.checkpoint.names.filter { finetunedNames.contains($0) && leftOut($0) == nil }
            for name in compared {
                let a = base.checkpoint.info(name)!, b = finetuned.info(name)!
                guard a.shape == b.shape else {
                    throw InputError(file: finetunedFolder, problem: "tensor \(name) is \(Shape.describe(b.shape)) but \(Shape.describe(a.shape)) in \(base.folder): the two checkpoints are not the same architecture")
                }
            }
        }

        /// The base's tie when the fine-tune keeps it (whether or not either stores a copy of the
        /// head); a fine-tune with a head of its own on a tied base is refused naming the tie.
        static func keptTie(base: BaseModel, finetuned: Checkpoint, finetunedFolder: String) throws -> EmbeddingTie? {
            let config = finetuned.configText.flatMap { try? StrictJSON.parse(Array($0.utf8)) }
            let finetunedTie = EmbeddingTie(config: config, tensorNames: Set(finetuned.names))
            guard let tie = base.tie else {
                if let finetunedTie, base.checkpoint.info(finetunedTie.embedding) != nil, base.checkpoint.info(finetunedTie.head) != nil,
                   finetuned.info(finetunedTie.head) == nil {
                    throw InputError(file: finetunedFolder, problem: "ties \(finetunedTie.head) to \(finetunedTie.embedding) (tie_word_embeddings true) but the base \(base.folder) has a head of its own; extract from a fine-tune saved untied")
                }
                return nil
            }
            guard finetunedTie != nil else {
                throw InputError(file: finetunedFolder, problem: "has its own \(tie.head) (tie_word_embeddings false) but the base \(base.folder) ties it to \(tie.embedding); extract from a base saved untied (tie_word_embeddings false, lm_head.weight a copy of the embedding)")
            }
            return tie
        }
    }

    /// The compared tensors that differ.
    static func changedTensors(_ names: [String], base: Checkpoint, finetuned: Checkpoint, baseFolder: String, finetunedFolder: String) throws -> [String] {
        var changed: [String] = []
        for name in names {
            let same: Bool
            if base.info(name)!.dtype == finetuned.info(name)!.dtype {
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

    /// A changed tensor stored whole, how, and why (the report's reason).
    typealias WholeTensor = (name: String, mode: FullTensorMode, reason: String, factorable: Bool)

    /// What becomes of each changed tensor under the options: factored, stored whole or skipped,
    /// and for a budget what the low-rank modules may spend. From names, shapes and dtypes alone.
    struct Plan {
        var lowRank: [(name: String, layout: WeightLayout)] = []
        var whole: [WholeTensor] = []
        var skipped: [String] = []
        /// Factoring passes over the low-rank modules (2: a budget too large to keep its factors).
        var passes = 1
        /// Parameters a budget leaves the low-rank modules after the tensors stored whole.
        var lowRankBudget = 0

        init(changed: [String], base: BaseModel, classes: TensorClasses, options: Options, baseFolder: String, finetunedFolder: String) throws {
            for name in changed {
                guard selected(name, options: options) else {
                    skipped.append(name)
                    continue
                }
                place(name, info: base.checkpoint.info(name)!, base: base, classes: classes, options: options)
            }
            guard !lowRank.isEmpty || !whole.isEmpty else {
                throw InputError(file: finetunedFolder, problem: "every tensor that differs from \(baseFolder) is excluded or skipped: nothing to extract")
            }
            if case .budget(let budget) = options.rule {
                let wholeParameters = whole.reduce(0) { $0 + (base.checkpoint.info($1.name)!.elementCount ?? 0) }
                lowRankBudget = budget - wholeParameters
                guard lowRankBudget >= 0 else {
                    throw BudgetTooSmallError(budget: budget, wholeParameters: wholeParameters)
                }
                passes = budgetPasses(lowRank.map { base.checkpoint.info($0.name)!.shape }, options: options)
            }
        }

        /// Steps the progress counts: every factoring pass over the modules, then each whole tensor.
        var steps: Int { passes * lowRank.count + whole.count }

        private mutating func place(_ name: String, info: TensorInfo, base: BaseModel, classes: TensorClasses, options: Options) {
            let embedding = classes.isEmbedding(name)
            if info.shape.count == 2 && info.dtype.isFloatingPoint && name.hasSuffix(".weight") && !(embedding && options.embeddings != .lora) {
                let layout: WeightLayout = classes.isEmbeddingTable(name) ? .embedding
                    : ModuleLayoutRule.layout(of: String(name.dropLast(".weight".count)), modelType: base.identity.modelType)
                lowRank.append((name, layout))
            } else if embedding && info.shape.count == 2 {
                if options.embeddings == .skip { skipped.append(name) } else {
                    whole.append((name, .replace, "embedding/output head: low rank would lose most of it", true))
                }
            } else {
                switch options.other {
                case .skip: skipped.append(name)
                case .full: whole.append((name, .replace, info.shape.count == 2 ? "not a linear weight" : "\(info.shape.count)-D tensor (norm or bias): stored whole", false))
                case .delta: whole.append((name, .delta, info.shape.count == 2 ? "not a linear weight" : "\(info.shape.count)-D tensor (norm or bias): stored as a dense delta", false))
                }
            }
        }
    }

    /// A budget needs every module's spectrum before any rank is known. While the factors up to
    /// the cap fit in the allowance they are kept from that pass (1 pass); beyond it (large
    /// models) only the spectra are kept and the modules given a rank are factored again
    /// (2 passes), which keeps memory flat at about 1.6× the time.
    static func budgetPasses(_ shapes: [[Int]], options: Options) -> Int {
        let kept = shapes.reduce(0) { $0 + ($1[0] + $1[1]) * min($1[0], $1[1], options.maxRank ?? 256) * 4 }
        return kept > options.budgetFactorAllowance ? 2 : 1
    }

    static func selected(_ name: String, options: Options) -> Bool {
        func matches(_ pattern: String) -> Bool { fnmatch(pattern, name, 0) == 0 }
        if !options.include.isEmpty && !options.include.contains(where: matches) { return false }
        return !options.exclude.contains(where: matches)
    }
}
