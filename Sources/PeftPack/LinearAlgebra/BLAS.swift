import COpenBLAS

/// The one place that calls BLAS (OpenBLAS, CBLAS interface, row-major).
public enum BLAS {
    /// OpenBLAS's own thread count. When parallelism comes from the caller (tensors in
    /// parallel), set 1 so the two levels do not oversubscribe the cores.
    public static var threadCount: Int {
        get { Int(openblas_get_num_threads()) }
        set { openblas_set_num_threads(Int32(newValue)) }
    }

    /// C = alpha · op(A) · op(B) + beta · C on raw row-major buffers with leading dimensions.
    public static func gemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                            a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                            beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        guard m > 0, n > 0 else { return }
        cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// op(A) · op(B) · alpha.
    public static func gemm(_ a: Matrix, _ b: Matrix, transposeA: Bool = false, transposeB: Bool = false, alpha: Float = 1) -> Matrix {
        let m = transposeA ? a.cols : a.rows, k = transposeA ? a.rows : a.cols
        let n = transposeB ? b.rows : b.cols
        precondition(k == (transposeB ? b.cols : b.rows), "gemm inner dimensions disagree")
        var c = Matrix(zeros: m, n)
        a.values.withUnsafeBufferPointer { pa in
            b.values.withUnsafeBufferPointer { pb in
                c.values.withUnsafeMutableBufferPointer { pc in
                    gemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                         a: pa.baseAddress!, lda: a.cols, b: pb.baseAddress!, ldb: b.cols, beta: 0, c: pc.baseAddress!, ldc: n)
                }
            }
        }
        return c
    }

    /// C = alpha · op(A) · op(B) + beta · C in fp64 (merging computes deltas exactly enough to
    /// round once to the output dtype).
    public static func gemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Double,
                            a: UnsafePointer<Double>, lda: Int, b: UnsafePointer<Double>, ldb: Int,
                            beta: Double, c: UnsafeMutablePointer<Double>, ldc: Int) {
        guard m > 0, n > 0 else { return }
        cblas_dgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// Σ xᵢ² of fp32 values accumulated in fp64 (sdsdot's sibling dsdot).
    public static func squaredNorm(_ x: UnsafeBufferPointer<Float>) -> Double {
        guard let base = x.baseAddress, x.count > 0 else { return 0 }
        var total = 0.0
        var start = 0
        // dsdot takes an Int32 count.
        while start < x.count {
            let count = min(x.count - start, Int(Int32.max))
            total += cblas_dsdot(Int32(count), base + start, 1, base + start, 1)
            start += count
        }
        return total
    }
}
