import Foundation

/// What merge writes when adapters change the head or the embedding of a tied base.
public enum TiedEmbeddingsPolicy: String, CaseIterable, Sendable, Encodable {
    /// Write the head as a tensor of its own and set `tie_word_embeddings` false when the adapters
    /// leave head and embedding different: the merged model computes what the adapters computed.
    case untie
    /// Keep one shared tensor (what PEFT's merge_and_unload does for LoRA): every change to the
    /// head or the embedding lands in it, so each also moves the other; the report says how far.
    case keep
}

extension Merge {
    public struct TiedEmbeddingsReport: Encodable {
        public var embedding: String
        public var head: String
        public var policy: TiedEmbeddingsPolicy
        /// "untied" (head written, tie_word_embeddings false), "kept" (one tensor for both, at the
        /// cost below) or "kept-identical" (the adapters change both alike, so the tie costs nothing).
        public var outcome: String
        /// keep: the shared tensor against the head and embedding the adapters compute, as the
        /// largest element difference and ‖shared − wanted‖_F / ‖wanted‖_F.
        public var headMaxAbsError: Double?
        public var headRelativeError: Double?
        public var embeddingMaxAbsError: Double?
        public var embeddingRelativeError: Double?
        /// The base stores a copy of the tied head (older transformers saved one): written with the
        /// value the head has in the output, as transformers loads the copy into the shared weight.
        public var storedHeadCopy: Bool
    }
}

/// Merging into a tied base. PEFT's runtime, without `ensure_weight_tying`, wraps the embedding or
/// the head alone: a LoRA or modules_to_save copy of one leaves the other on the original shared
/// weight (with it, PEFT saves the same change for both). The merged pair is therefore computed
/// as two tensors from the one stored weight, head' = E ∘ head changes and embedding' = E ∘
/// embedding changes, and written as the policy says.
enum TiedMerge {
    struct Plan {
        /// Merge's changes, without the head's when the tie is kept.
        var changes: [String: TensorChange]
        /// Computed tensors by output name, written in place of the general path.
        var outputs: [String: Merge.FoldedTensor]
        /// The head to add to the output when the checkpoint has none and the output unties.
        var addedHead: TensorInfo?
        var untie: Bool
        var report: Merge.TiedEmbeddingsReport
    }

    static func plan(changes: [String: TensorChange], base: BaseModel, policy: TiedEmbeddingsPolicy, outputType: DType?,
                     readers: [PackReader], owners: [Int], selected: [(adapter: Adapter, weight: Double)]) throws -> Plan? {
        guard let tie = base.tie, changes[tie.head] != nil || changes[tie.embedding] != nil,
              let embeddingInfo = base.checkpoint.info(tie.embedding), embeddingInfo.dtype.isFloatingPoint else { return nil }
        let outType = outputType ?? embeddingInfo.dtype
        let embeddingOperations = changes[tie.embedding]?.operations ?? []
        let headOperations = changes[tie.head]?.operations ?? []
        let original: HostTensor = try base.checkpoint.tensor(tie.embedding)
        let output = TensorInfo(name: tie.embedding, dtype: outType, shape: embeddingInfo.shape)
        func merged(_ operations: [(operation: TensorChange.Operation, weight: Double)]) throws -> Merge.FoldedTensor {
            try Merge.fold(operations, into: original, stored: embeddingInfo, output: output, readers: readers, owners: owners, selected: selected)
        }
        let embedding = try merged(embeddingOperations)
        let head = try merged(headOperations)
        let storesHead = base.checkpoint.info(tie.head) != nil
        var report = Merge.TiedEmbeddingsReport(embedding: tie.embedding, head: tie.head, policy: policy, outcome: "kept-identical",
                                                storedHeadCopy: storesHead)
        var plan = Plan(changes: changes, outputs: [:], addedHead: nil, untie: false, report: report)
        if !embeddingOperations.isEmpty { plan.outputs[tie.embedding] = embedding }
        if embedding.result.bytes == head.result.bytes {
            plan.changes[tie.head] = nil
            // Left as the base's, the copy would hold the unmerged head, which transformers loads.
            if storesHead { plan.outputs[tie.head] = head }
            return plan
        }
        switch policy {
        case .untie:
            report.outcome = "untied"
            plan.untie = true
            plan.outputs[tie.head] = head
            if !storesHead {
                plan.addedHead = TensorInfo(name: tie.head, dtype: outType, shape: embeddingInfo.shape)
            }
        case .keep:
            report.outcome = "kept"
            let shared = try merged(embeddingOperations + headOperations)
            // Rounded values on both sides: a cost is what the written tensor differs by, not rounding.
            func written(_ tensor: Merge.FoldedTensor) -> [Double] { tensor.result.floats().map(Double.init) }
            let sharedValues = written(shared)
            (report.headMaxAbsError, report.headRelativeError) = difference(sharedValues, written(head))
            (report.embeddingMaxAbsError, report.embeddingRelativeError) = difference(sharedValues, written(embedding))
            plan.outputs[tie.embedding] = shared
            plan.changes[tie.embedding] = TensorChange(operations: embeddingOperations + headOperations)
            plan.changes[tie.head] = nil
            // A stored copy of the head is loaded into the shared weight: it gets the shared value.
            if storesHead { plan.outputs[tie.head] = shared }
        }
        plan.report = report
        return plan
    }

    /// Largest element difference and relative Frobenius distance of `actual` from `wanted`.
    static func difference(_ actual: [Double], _ wanted: [Double]) -> (Double, Double) {
        var largest = 0.0, squares = 0.0, norm = 0.0
        for (a, w) in zip(actual, wanted) {
            largest = max(largest, abs(a - w))
            squares += (a - w) * (a - w)
            norm += w * w
        }
        return (largest, norm > 0 ? (squares / norm).squareRoot() : squares.squareRoot())
    }

    /// The output's shards with an added head placed right after the embedding it was tied to.
    static func placing(_ head: TensorInfo, after embedding: String, in shards: [[TensorInfo]]) -> [[TensorInfo]] {
        var shards = shards
        let index = shards.firstIndex { $0.contains { $0.name == embedding } } ?? shards.count - 1
        shards[index].append(head)
        return shards
    }

    /// config.json with `tie_word_embeddings` set false, the rest of the text unchanged (the key
    /// is added when the config relied on its class's default).
    static func untiedConfig(_ text: String) -> String {
        if let range = text.range(of: #""tie_word_embeddings"\s*:\s*true"#, options: .regularExpression) {
            return text.replacingCharacters(in: range, with: "\"tie_word_embeddings\": false")
        }
        guard let brace = text.firstIndex(of: "{") else { return text }
        return String(text[...brace]) + "\n  \"tie_word_embeddings\": false," + String(text[text.index(after: brace)...])
    }

    static func untieConfig(in folder: String) throws {
        let path = (folder as NSString).appendingPathComponent("config.json")
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return }
        try untiedConfig(text).write(toFile: path, atomically: false, encoding: .utf8)
    }
}
