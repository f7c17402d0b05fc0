import Foundation

/// One forward pass: the model, the adapters applied to it, and the batch geometry. Activations
/// hold every token of the batch, one row each; item `b` occupies rows `b * rowsPerItem ..<`.
struct ForwardPass {
    let model: TransformerModel
    let adapters: AdapterSet?
    let batch: Int
    /// Real tokens per batch item.
    let tokens: Int
    /// Called after each layer with (layers done, layers in all).
    let progress: ((Int, Int) -> Void)?
    /// Called after each layer with its index and the hidden states it output.
    let observeLayer: ((Int, TokenMatrix) -> Void)?
    /// The first error reading a weight; the pass runs on and `TransformerModel.forward` throws it.
    let failure = PassFailure()
    /// Set when the caller computes the output head itself, a tile of the vocabulary at a time.
    let deferredHead: DeferredHead?

    init(model: TransformerModel, adapters: AdapterSet?, batch: Int, tokens: Int,
         progress: ((Int, Int) -> Void)? = nil, observeLayer: ((Int, TokenMatrix) -> Void)? = nil,
         deferredHead: DeferredHead? = nil) {
        self.model = model
        self.adapters = adapters
        self.batch = batch
        self.tokens = tokens
        self.progress = progress
        self.observeLayer = observeLayer
        self.deferredHead = deferredHead
    }

    /// Virtual prompt tokens prepended to each item's input embeddings.
    var promptLength: Int { adapters?.promptLength ?? 0 }
    /// Prefix keys/values every layer attends to before the sequence.
    var prefixLength: Int { adapters?.prefixLength ?? 0 }
    var rowsPerItem: Int { promptLength + tokens }
    var rows: Int { batch * rowsPerItem }

    /// Position id of a row: prefix tokens occupy the first positions, as a KV cache would.
    func position(ofRow row: Int) -> Int {
        prefixLength + row % rowsPerItem
    }

    /// Calls `body` with rows `rows` (all when nil) of a parameter in fp32: an adapter's
    /// replacement, or the model's value widened for this use only.
    func withParameter<R>(_ id: ParameterID, rows: Range<Int>? = nil, _ body: (UnsafeBufferPointer<Float>) -> R) -> R {
        let width = model.parameters.rowWidth(id)
        if let replaced = adapters?.overrides[id] {
            let elements = rows.map { ($0.lowerBound * width)..<($0.upperBound * width) } ?? replaced.indices
            return replaced.withUnsafeBufferPointer { body(UnsafeBufferPointer(rebasing: $0[elements])) }
        }
        do {
            return try model.parameters.withValues(id, rows: rows, body)
        } catch {
            failure.record(error)
            let count = rows.map { $0.count * width } ?? Shape.elementCount(model.parameters.shapes[id]) ?? 0
            return [Float](repeating: 0, count: count).withUnsafeBufferPointer(body)
        }
    }

    /// A parameter's values as an array: for vectors (norms, biases) and small tables.
    func parameter(_ id: ParameterID) -> [Float] {
        withParameter(id) { Array($0) }
    }

    /// A causal LM's logits [batch, seq, vocab] from the final hidden states `x` (soft-capped
    /// as Gemma 2 caps them); with `deferredHead` set, `x` is handed over instead and the
    /// returned tensor has no values.
    func vocabularyLogits(_ head: Int, _ x: TokenMatrix, softcap: Float?) -> FloatTensor {
        let shape = [batch, rowsPerItem, model.linears[head].outFeatures]
        if let deferredHead {
            deferredHead.set(hidden: x, head: head, softcap: softcap)
            return FloatTensor(shape: shape, values: [])
        }
        var logits = linear(head, x)
        Self.cap(&logits, softcap)
        return FloatTensor(shape: shape, values: logits.values)
    }

    static func cap(_ logits: inout TokenMatrix, _ softcap: Float?) {
        guard let cap = softcap else { return }
        logits.values.withUnsafeMutableBufferPointer { v in for i in 0..<v.count { v[i] = tanh(v[i] / cap) * cap } }
    }

    /// Reports the end of layer `index` of `count`, whose output is `hidden`.
    func finishedLayer(_ index: Int, of count: Int, hidden: TokenMatrix) {
        observeLayer?(index, hidden)
        progress?(index + 1, count)
    }

    func norm(_ x: inout TokenMatrix, _ weights: NormWeights, epsilon: Double) {
        if let bias = weights.bias {
            RuntimeKernels.layerNorm(&x, weight: parameter(weights.weight), bias: parameter(bias), epsilon: epsilon)
        } else if weights.offsetByOne {
            // Gemma's RMSNorm: x̂ · (1 + w), the sum taken in fp32 as transformers does.
            RuntimeKernels.rmsNorm(&x, weight: parameter(weights.weight).map { 1 + $0 }, epsilon: epsilon)
        } else {
            RuntimeKernels.rmsNorm(&x, weight: parameter(weights.weight), epsilon: epsilon)
        }
    }

    /// An RMSNorm over each head's `headDim` values of every row (Qwen3's and Gemma 3's q/k norm).
    func headNorm(_ x: inout TokenMatrix, _ weights: NormWeights, headDim: Int, epsilon: Double) {
        var heads = TokenMatrix(rows: x.rows * (x.cols / headDim), cols: headDim, values: x.values)
        norm(&heads, weights, epsilon: epsilon)
        x.values = heads.values
    }

    /// Input embeddings of the batch: each item's prompt rows, then its looked-up tokens.
    func inputEmbeddings(_ index: Int, inputIds: [[Int]]) -> TokenMatrix {
        let tokenRows = embed(index, ids: inputIds.flatMap { $0 })
        guard let prompt = adapters?.prompt else { return tokenRows }
        let dim = tokenRows.cols
        var result = TokenMatrix(rows: rows, cols: dim)
        for item in 0..<batch {
            let target = item * rowsPerItem * dim
            result.values.replaceSubrange(target..<target + prompt.values.count, with: prompt.values)
            let source = item * tokens * dim
            let promptEnd = target + prompt.values.count
            result.values.replaceSubrange(promptEnd..<promptEnd + tokens * dim,
                                          with: tokenRows.values[source..<source + tokens * dim])
        }
        return result
    }

    /// Adds the rows of a position-indexed table (learned absolute positions) to `x`.
    func addPositionRows(_ x: inout TokenMatrix, table: [Float], positionOfRow: (Int) -> Int) {
        let cols = x.cols
        x.values.withUnsafeMutableBufferPointer { v in
            table.withUnsafeBufferPointer { t in
                for row in 0..<x.rows {
                    let source = positionOfRow(row) * cols
                    for col in 0..<cols { v[row * cols + col] += t[source + col] }
                }
            }
        }
    }

    /// Runs one attention block over the batch. `q`, `k`, `v` give each token's projections at a
    /// column offset of their matrices (GPT-2 keeps all three in one); heads share key/value heads
    /// in groups (repeat_kv). Each layer's prefix keys/values come before the sequence.
    func attention(
        q: TokenMatrix, qOffset: Int = 0, k: TokenMatrix, kOffset: Int = 0, v: TokenMatrix, vOffset: Int = 0,
        layer: Int, geometry: AttentionGeometry
    ) -> TokenMatrix {
        let prefix = adapters?.prefix(layer: layer)
        return AttentionKernel.run(
            q: q, qOffset: qOffset, k: k, kOffset: kOffset, v: v, vOffset: vOffset,
            prefixKeys: prefix?.keys, prefixValues: prefix?.values,
            batch: batch, length: rowsPerItem, geometry: geometry)
    }
}

/// The first error of a forward pass. The bodies' arithmetic does not throw; a weight that cannot
/// be read (a computed source failing) is recorded here and the pass's result discarded.
final class PassFailure: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var error: Error?

    func record(_ error: Error) {
        lock.lock()
        defer { lock.unlock() }
        if self.error == nil { self.error = error }
    }
}

/// The final hidden states a pass hands over when its caller computes the output head.
final class DeferredHead: @unchecked Sendable {
    private(set) var hidden: TokenMatrix?
    private(set) var head = 0
    private(set) var softcap: Float?

    func set(hidden: TokenMatrix, head: Int, softcap: Float?) {
        (self.hidden, self.head, self.softcap) = (hidden, head, softcap)
    }
}

/// A pass's output: whole, or a causal LM's logits left uncomputed, to be taken over tiles of the
/// vocabulary so that no [batch, seq, vocab] tensor is ever held.
enum PassOutput {
    case whole(FloatTensor)
    case tiles(VocabularyLogits)
}

/// A causal LM's logits left uncomputed: the final hidden states and the pass (model and
/// adapters) that turns them into logits over any range of the vocabulary.
struct VocabularyLogits {
    let pass: ForwardPass
    let hidden: TokenMatrix
    let head: Int
    let softcap: Float?

    var vocabulary: Int { pass.model.linears[head].outFeatures }
    var shape: [Int] { [pass.batch, pass.rowsPerItem, vocabulary] }

    /// Logits of every row for vocabulary entries `columns` [rows, columns.count].
    func tile(_ columns: Range<Int>) throws -> TokenMatrix {
        var logits = pass.linear(head, hidden, outputs: columns)
        ForwardPass.cap(&logits, softcap)
        if let error = pass.failure.error { throw error }
        return logits
    }
}
