/// The numeric building blocks of a forward pass. Every matrix product goes through `gemm`, the
/// runtime's only route into BLAS (LinearAlgebra/BLAS.swift).
enum RuntimeKernels {
    /// Row-major `C = alpha · op(A) · op(B) + beta · C` with `op(A)`: m × k and `op(B)`: k × n.
    static func gemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        BLAS.gemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                  a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    }

    /// `x · Wᵀ` for W stored [out, in] (nn.Linear), or `x · W` for W stored [in, out] (Conv1D).
    static func project(_ x: TokenMatrix, weight: [Float], outFeatures: Int, storedTransposed: Bool) -> TokenMatrix {
        var y = TokenMatrix(rows: x.rows, cols: outFeatures)
        accumulate(x, weight: weight, outFeatures: outFeatures, storedTransposed: storedTransposed,
                   alpha: 1, into: &y)
        return y
    }

    /// `y += alpha · x · Wᵀ` (or `x · W` when W is stored [in, out]).
    static func accumulate(
        _ x: TokenMatrix, weight: [Float], outFeatures: Int, storedTransposed: Bool, alpha: Float, into y: inout TokenMatrix
    ) {
        precondition(weight.count == x.cols * outFeatures && y.rows == x.rows && y.cols == outFeatures)
        let (rows, inFeatures) = (x.rows, x.cols)
        x.values.withUnsafeBufferPointer { xp in
            weight.withUnsafeBufferPointer { wp in
                y.values.withUnsafeMutableBufferPointer { yp in
                    gemm(transposeA: false, transposeB: !storedTransposed, m: rows, n: outFeatures, k: inFeatures,
                         alpha: alpha, a: xp.baseAddress!, lda: inFeatures,
                         b: wp.baseAddress!, ldb: storedTransposed ? outFeatures : inFeatures,
                         beta: 1, c: yp.baseAddress!, ldc: outFeatures)
                }
            }
        }
    }

    /// `B · A` for B: [out, r] and A: [r, in], the dense form of a low-rank update.
    static func lowRankProduct(b: [Float], a: [Float], out: Int, rank: Int, in inFeatures: Int) -> [Float] {
        var product = [Float](repeating: 0, count: out * inFeatures)
        b.withUnsafeBufferPointer { bp in
            a.withUnsafeBufferPointer { ap in
                product.withUnsafeMutableBufferPointer { pp in
                    gemm(transposeA: false, transposeB: false, m: out, n: inFeatures, k: rank, alpha: 1,
                         a: bp.baseAddress!, lda: rank, b: ap.baseAddress!, ldb: inFeatures,
                         beta: 0, c: pp.baseAddress!, ldc: inFeatures)
                }
            }
        }
        return product
    }

    /// torch.nn.LayerNorm over each row: biased variance, statistics accumulated in double.
    static func layerNorm(_ x: inout TokenMatrix, weight: [Float], bias: [Float], epsilon: Double) {
        let cols = x.cols
        x.values.withUnsafeMutableBufferPointer { v in
            for row in 0..<x.rows {
                let base = row * cols
                var sum = 0.0
                for col in 0..<cols { sum += Double(v[base + col]) }
                let mean = sum / Double(cols)
                var squares = 0.0
                for col in 0..<cols {
                    let centered = Double(v[base + col]) - mean
                    squares += centered * centered
                }
                let inverseStd = 1 / (squares / Double(cols) + epsilon).squareRoot()
                for col in 0..<cols {
                    let normalized = Float((Double(v[base + col]) - mean) * inverseStd)
                    v[base + col] = normalized * weight[col] + bias[col]
                }
            }
        }
    }

    /// LlamaRMSNorm: `weight · x / √(mean(x²) + ε)` over each row.
    static func rmsNorm(_ x: inout TokenMatrix, weight: [Float], epsilon: Double) {
        let cols = x.cols
        x.values.withUnsafeMutableBufferPointer { v in
            for row in 0..<x.rows {
                let base = row * cols
                var squares = 0.0
                for col in 0..<cols { squares += Double(v[base + col]) * Double(v[base + col]) }
                let inverseRMS = Float(1 / (squares / Double(cols) + epsilon).squareRoot())
                for col in 0..<cols { v[base + col] = weight[col] * (v[base + col] * inverseRMS) }
            }
        }
    }
}
