import Foundation

/// The shape and masking of a layer's attention.
struct AttentionGeometry {
    let heads: Int
    let keyValueHeads: Int
    let headDim: Int
    /// Multiplies the query·key scores (1/√head_dim, GPT-2 variants aside).
    let scale: Float
    /// Decoders: a token sees itself and earlier positions (prefix included). BERT: everything.
    let causal: Bool
    /// Sliding-window layers: a token sees only the last `window` positions up to itself.
    let window: Int?
    /// Gemma 2's attention soft-capping: scaled scores become cap · tanh(score / cap) before the mask.
    var softcap: Float? = nil
}

/// Eager scaled-dot-product attention as transformers computes it in fp32: scores, additive mask,
/// softmax over keys, weighted sum of values; one (item, head) pair at a time through `gemm`.
enum AttentionKernel {
    static func run(
        q: TokenMatrix, qOffset: Int, k: TokenMatrix, kOffset: Int, v: TokenMatrix, vOffset: Int,
        prefixKeys: TokenMatrix?, prefixValues: TokenMatrix?, batch: Int, length: Int, geometry g: AttentionGeometry
    ) -> TokenMatrix {
        let prefixLength = prefixKeys?.rows ?? 0
        let keys = prefixLength + length
        let groupSize = g.heads / g.keyValueHeads
        var output = TokenMatrix(rows: batch * length, cols: g.heads * g.headDim)
        var scores = [Float](repeating: 0, count: length * keys)
        let emptyPrefix = [Float](repeating: 0, count: 1)

        q.values.withUnsafeBufferPointer { qp in
        k.values.withUnsafeBufferPointer { kp in
        v.values.withUnsafeBufferPointer { vp in
        (prefixKeys?.values ?? emptyPrefix).withUnsafeBufferPointer { pkp in
        (prefixValues?.values ?? emptyPrefix).withUnsafeBufferPointer { pvp in
        output.values.withUnsafeMutableBufferPointer { op in
        scores.withUnsafeMutableBufferPointer { sp in
            let prefixStride = prefixKeys?.cols ?? 0
            for item in 0..<batch {
                let firstRow = item * length
                for head in 0..<g.heads {
                    let kvHead = head / groupSize
                    let query = qp.baseAddress! + firstRow * q.cols + qOffset + head * g.headDim
                    let key = kp.baseAddress! + firstRow * k.cols + kOffset + kvHead * g.headDim
                    let value = vp.baseAddress! + firstRow * v.cols + vOffset + kvHead * g.headDim
                    let out = op.baseAddress! + firstRow * output.cols + head * g.headDim
                    let s = sp.baseAddress!
                    if prefixLength > 0 {
                        RuntimeKernels.gemm(transposeA: false, transposeB: true, m: length, n: prefixLength, k: g.headDim,
                                     alpha: g.scale, a: query, lda: q.cols,
                                     b: pkp.baseAddress! + kvHead * g.headDim, ldb: prefixStride,
                                     beta: 0, c: s, ldc: keys)
                    }
                    RuntimeKernels.gemm(transposeA: false, transposeB: true, m: length, n: length, k: g.headDim,
                                 alpha: g.scale, a: query, lda: q.cols, b: key, ldb: k.cols,
                                 beta: 0, c: s + prefixLength, ldc: keys)
                    for row in 0..<length {
                        let visible = visibleKeys(query: prefixLength + row, keys: keys, geometry: g)
                        if let cap = g.softcap { softcap(s + row * keys, visible, cap: cap) }
                        softmax(s + row * keys, count: keys, visible: visible)
                    }
                    if prefixLength > 0 {
                        RuntimeKernels.gemm(transposeA: false, transposeB: false, m: length, n: g.headDim, k: prefixLength,
                                     alpha: 1, a: s, lda: keys,
                                     b: pvp.baseAddress! + kvHead * g.headDim, ldb: prefixStride,
                                     beta: 0, c: out, ldc: output.cols)
                    }
                    RuntimeKernels.gemm(transposeA: false, transposeB: false, m: length, n: g.headDim, k: length,
                                 alpha: 1, a: s + prefixLength, lda: keys, b: value, ldb: v.cols,
                                 beta: prefixLength > 0 ? 1 : 0, c: out, ldc: output.cols)
                }
            }
        }}}}}}}
        return output
    }

    /// Key positions a query position may attend to.
    private static func visibleKeys(query: Int, keys: Int, geometry g: AttentionGeometry) -> Range<Int> {
        let end = g.causal ? min(query + 1, keys) : keys
        let start = g.window.map { max(0, query - $0 + 1) } ?? 0
        return start..<end
    }

    private static func softcap(_ row: UnsafeMutablePointer<Float>, _ visible: Range<Int>, cap: Float) {
        for j in visible { row[j] = tanh(row[j] / cap) * cap }
    }

    /// Softmax of `row[visible]` in place; masked keys get probability exactly 0, as they do after
    /// transformers adds the dtype's minimum to them.
    private static func softmax(_ row: UnsafeMutablePointer<Float>, count: Int, visible: Range<Int>) {
        var maximum = -Float.infinity
        for j in visible { maximum = max(maximum, row[j]) }
        var sum: Float = 0
        for j in visible {
            let e = exp(row[j] - maximum)
            row[j] = e
            sum += e
        }
        for j in 0..<count {
            row[j] = visible.contains(j) ? row[j] / sum : 0
        }
    }
}
