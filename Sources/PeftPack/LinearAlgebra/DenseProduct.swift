/// Products of small row-major fp64 matrices, for adapter kinds whose ΔW is formed in full.
enum DenseProduct {
    /// a [rows, inner] · b [inner, cols] (BLAS dgemm).
    static func product(_ a: [Double], _ b: [Double], rows: Int, inner: Int, cols: Int) -> [Double] {
        var c = [Double](repeating: 0, count: rows * cols)
        guard inner > 0 else { return c }
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                c.withUnsafeMutableBufferPointer { pc in
                    BLAS.gemm(transposeA: false, transposeB: false, m: rows, n: cols, k: inner, alpha: 1,
                              a: pa.baseAddress!, lda: inner, b: pb.baseAddress!, ldb: cols, beta: 0, c: pc.baseAddress!, ldc: cols)
                }
            }
        }
        return c
    }
}
