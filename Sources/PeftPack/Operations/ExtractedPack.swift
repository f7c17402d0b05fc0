import Foundation

extension Extract {
    /// Extract's write step: the pack, filled as the factors and whole tensors are made, so memory
    /// holds a few modules' factors, not the adapter (which grows with the model); the header,
    /// written last, gets the document.
    final class ExtractedPack {
        private let writer: PackWriter
        private let output: String
        private let name: String
        private let tiedHead: EmbeddingTie?
        private(set) var modules: [AdapterModule] = []
        private(set) var moduleReports: [ModuleReport] = []
        /// Modules a budget gave rank 0, in module order.
        private(set) var leftOut: [String] = []
        /// The head that follows a tied embedding stored whole.
        private(set) var tiedWhole: [WholeTensor] = []
        private var shapes: [String: [Int]] = [:]
        private(set) var parameters = 0

        init(output: String, name: String, level: Int32, tiedHead: EmbeddingTie?) throws {
            writer = try PackWriter(destination: output, options: .init(level: level))
            self.output = output
            self.name = name
            self.tiedHead = tiedHead
        }

        private func append(_ tensor: String, dtype: DType, shape: [Int], bytes: UnsafeRawBufferPointer) throws {
            try FiniteValues.checkResult(bytes, dtype: dtype, name: tensor, what: "the extracted tensor (the fine-tune or the base holds NaN/Inf there)")
            try writer.append(name: tensor, dtype: dtype, shape: shape, bytes: bytes)
            shapes[tensor] = shape
            parameters += shape.reduce(1, *)
        }

        private func appendFactors(_ a: Matrix, _ b: Matrix, target: String) throws -> (a: String, b: String) {
            let aName = AdapterModule.tensorName(adapter: name, target: target, role: TensorRole.loraA)
            let bName = AdapterModule.tensorName(adapter: name, target: target, role: TensorRole.loraB)
            try a.values.withUnsafeBytes { try append(aName, dtype: .f32, shape: [a.rows, a.cols], bytes: $0) }
            try b.values.withUnsafeBytes { try append(bName, dtype: .f32, shape: [b.rows, b.cols], bytes: $0) }
            return (aName, bName)
        }

        /// One factored module (rank 0: left out), and the tied head's twin when it is the embedding.
        func add(_ item: Factored) throws {
            guard item.rank > 0 else {
                leftOut.append(item.candidate.tensor)
                return
            }
            let (a, b) = loraFactors(item.triplets, rank: item.rank, layout: item.candidate.layout)
            let target = String(item.candidate.tensor.dropLast(".weight".count))
            let (aName, bName) = try appendFactors(a, b, target: target)
            modules.append(AdapterModule(target: target, change: .lowRank(LowRankModule(layout: item.candidate.layout, rank: item.rank, scale: 1)),
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
                let headTarget = String(tie.head.dropLast(".weight".count))
                let (headAName, headBName) = try appendFactors(b.transposed, a.transposed, target: headTarget)
                modules.append(AdapterModule(target: headTarget, change: .lowRank(LowRankModule(layout: .linear, rank: item.rank, scale: 1)),
                                             tensors: [TensorRole.loraA: headAName, TensorRole.loraB: headBName]))
                report.tensor = tie.head
                moduleReports.append(report)
            }
        }

        /// One changed tensor stored whole: the fine-tune's value, or its difference from the base.
        func add(_ entry: WholeTensor, base: Checkpoint, finetuned: Checkpoint) throws {
            let shape = base.info(entry.name)!.shape
            // The bias of a factored linear travels with its module (PEFT's bias="lora_only").
            if entry.mode == .replace, entry.name.hasSuffix(".bias"),
               let owner = modules.firstIndex(where: { $0.lowRank != nil && $0.target + ".bias" == entry.name }) {
                let name = AdapterModule.tensorName(adapter: name, target: modules[owner].target, role: TensorRole.targetBias)
                let dtype = finetuned.info(entry.name)!.dtype
                try finetuned.withBytes(entry.name) { try append(name, dtype: dtype, shape: shape, bytes: $0) }
                modules[owner].tensors[TensorRole.targetBias] = name
                return
            }
            let name = AdapterModule.tensorName(adapter: name, target: entry.name, role: TensorRole.fullValue)
            if entry.mode == .replace {
                let dtype = finetuned.info(entry.name)!.dtype
                try finetuned.withBytes(entry.name) { try append(name, dtype: dtype, shape: shape, bytes: $0) }
            } else {
                let delta = zip(try finetuned.tensor(entry.name).floats(), try base.tensor(entry.name).floats()).map { $0 - $1 }
                try delta.withUnsafeBytes { try append(name, dtype: .f32, shape: shape, bytes: $0) }
            }
            let whole = ModuleChange.wholeTensor(WholeTensorModule(entry.mode == .delta ? .delta : .replace))
            modules.append(AdapterModule(target: entry.name, change: whole, tensors: [TensorRole.fullValue: name]))
            if let tie = tiedHead, entry.name == tie.embedding {
                // The same stored tensor, so the head follows the embedding as the fine-tune's does.
                modules.append(AdapterModule(target: tie.head, change: whole, tensors: [TensorRole.fullValue: name]))
                tiedWhole.append((tie.head, entry.mode, "tied to \(tie.embedding) in the base and the fine-tune: the head is the fine-tuned embedding", false))
            }
        }

        /// The header: the adapter, checked against the base and bound to it.
        func finish(base: BaseModel, baseFolder: String, finetunedFolder: String) throws {
            guard !modules.isEmpty else {
                throw UsageError("the budget leaves no rank for any module: nothing to extract")
            }
            let adapter = Adapter(name: name, kind: .lora, modules: modules)
            let targeted = try base.check(adapter, shapes: { self.shapes[$0] }, file: output)
            var identity = try base.identity(binding: targeted)
            identity.nameOrPath = baseFolder
            let document = PackDocument(base: identity, userMetadata: ["extracted_from": finetunedFolder], adapters: [adapter])
            try writer.finish(document: try StrictJSON.encoding(document))
        }

        func abandon() { writer.abandon() }
    }
}
