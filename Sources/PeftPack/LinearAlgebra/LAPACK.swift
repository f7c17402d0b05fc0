import COpenBLAS

public enum LinearAlgebraError: Error, CustomStringConvertible {
    case lapackFailed(routine: String, info: Int32)

    public var description: String {
        switch self {
        case .lapackFailed(let routine, let info):
            "\(routine) failed (info = \(info)): \(info < 0 ? "argument \(-info) was invalid" : "the iteration did not converge")"
        }
    }
}

/// The one place that calls LAPACK (LAPACKE, row-major).
public enum LAPACK {
    /// Thin SVD A = U·diag(S)·Vᵀ (sgesdd, divide and conquer); S descending.
    public static func svd(_ a: Matrix) throws -> (u: Matrix, s: [Float], vt: Matrix) {
        let m = a.rows, n = a.cols, k = min(m, n)
        var work = a.values
        var s = [Float](repeating: 0, count: k)
        var u = Matrix(zeros: m, k)
        var vt = Matrix(zeros: k, n)
        let info = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "S")), Int32(m), Int32(n), &work, Int32(n),
                                  &s, &u.values, Int32(k), &vt.values, Int32(n))
        guard info == 0 else { throw LinearAlgebraError.lapackFailed(routine: "sgesdd", info: info) }
        return (u, s, vt)
    }

    /// Thin QR A = Q·R for a tall or square A (sgeqrf + sorgqr): Q is m×k with orthonormal
    /// columns, R is k×n upper triangular, k = min(m, n).
    public static func qr(_ a: Matrix) throws -> (q: Matrix, r: Matrix) {
        let m = a.rows, n = a.cols, k = min(m, n)
        var work = a.values
        var tau = [Float](repeating: 0, count: k)
        var info = LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, Int32(m), Int32(n), &work, Int32(n), &tau)
        guard info == 0 else { throw LinearAlgebraError.lapackFailed(routine: "sgeqrf", info: info) }
        var r = Matrix(zeros: k, n)
        for row in 0..<k {
            for col in row..<n { r[row, col] = work[row * n + col] }
        }
        var q = Matrix(zeros: m, k)
        for row in 0..<m {
            for col in 0..<k { q[row, col] = work[row * n + col] }
        }
        info = LAPACKE_sorgqr(LAPACK_ROW_MAJOR, Int32(m), Int32(k), Int32(k), &q.values, Int32(k), &tau)
        guard info == 0 else { throw LinearAlgebraError.lapackFailed(routine: "sorgqr", info: info) }
        return (q, r)
    }
}

/// Householder QR in column-major storage, in place, for the thin matrices of a stack, with Q
/// left as its reflectors V and the triangular T of Q = I − V·T·Vᵀ (LAPACK's compact WY form).
/// LAPACKE's column-major `_work` entry points call LAPACK directly: a row-major k×n buffer is
/// the column-major n×k transpose, so callers factor what their buffer already is, where the
/// row-major wrappers copy every matrix to column-major and back (18.5 % of a 2B
/// `stack --rank 32`) and scan it for NaN. sgeqrf over ≤ 32 columns runs LAPACK's unblocked
/// sgeqr2, which measured twice as fast here as the recursive sgeqrt (0.73 against 1.51 ms for
/// 8192 × 32 on one core), and four times as fast as the LQ of the same matrix stored wide.
extension LAPACK {
    /// T of the one block reflector (count × count upper triangular, column-major).
    public struct CompactWY {
        public var t: [Float]
        /// min(rows, cols) of the factored matrix: the reflectors, V's columns.
        public var count: Int
    }

    /// A = Q·R for the column-major rows×cols A (leading dimension rows): R on and above the
    /// diagonal, the reflectors below it (sgeqrf), and T (slarft).
    public static func qrInPlace(_ a: UnsafeMutablePointer<Float>, rows: Int, cols: Int) throws -> CompactWY {
        let count = min(rows, cols), lda = Int32(max(1, rows))
        var tau = [Float](repeating: 0, count: count)
        // sgeqrf's optimal workspace is cols × its block size (32 here).
        var work = [Float](repeating: 0, count: max(1, cols * 64))
        var info = LAPACKE_sgeqrf_work(LAPACK_COL_MAJOR, Int32(rows), Int32(cols), a, lda, &tau, &work, Int32(work.count))
        guard info == 0 else { throw LinearAlgebraError.lapackFailed(routine: "sgeqrf", info: info) }
        var factors = CompactWY(t: [Float](repeating: 0, count: max(1, count * count)), count: count)
        guard count > 0 else { return factors }
        info = LAPACKE_slarft_work(LAPACK_COL_MAJOR, Int8(UInt8(ascii: "F")), Int8(UInt8(ascii: "C")), Int32(rows), Int32(count),
                                   a, lda, tau, &factors.t, Int32(count))
        guard info == 0 else { throw LinearAlgebraError.lapackFailed(routine: "slarft", info: info) }
        return factors
    }
}

extension LAPACK.CompactWY {
    /// C = Q·[X; 0] (rows × X.cols), Q's leading `count` columns times X (count × X.cols,
    /// row-major), for the column-major reflectors V (rows × count, leading dimension rows, unit
    /// lower trapezoidal; the triangle above holds R and is not read). C is row-major when
    /// `rowMajorResult`, column-major (leading dimension rows) otherwise. With the zeros below X,
    /// Q·[X; 0] = [X; 0] − V·(T·(V₁ᵀ·X)): one sgemm of 2·rows·count·X.cols FLOPs, where forming
    /// Q (sorgqr) and multiplying costs twice that, and sormqr spends half its work on the zeros.
    public func leadingColumns(times x: Matrix, reflectors v: UnsafePointer<Float>, rows: Int, rowMajorResult: Bool,
                               into c: UnsafeMutablePointer<Float>) {
        let k = count, cols = x.cols
        precondition(x.rows == k && rows >= k)
        func cIndex(_ i: Int, _ r: Int) -> Int { rowMajorResult ? i * cols + r : i + r * rows }
        // W = T·(V₁ᵀ·X), with V₁ the unit lower triangular top k × k of V.
        var z = x
        for l in 0..<k {
            for i in (l + 1)..<max(l + 1, k) {
                let factor = v[i + l * rows]
                for r in 0..<cols { z[l, r] += factor * x[i, r] }
            }
        }
        var w = Matrix(zeros: k, cols)
        for p in 0..<k {
            for q in p..<k {
                let factor = t[p + q * k]
                for r in 0..<cols { w[p, r] += factor * z[q, r] }
            }
        }
        // Top k rows: X − V₁·W.
        for i in 0..<k {
            for r in 0..<cols {
                var sum = w[i, r]
                for l in 0..<i { sum += v[i + l * rows] * w[l, r] }
                c[cIndex(i, r)] = x[i, r] - sum
            }
        }
        // The other rows: −V₂·W. BLAS is called row-major, where the column-major V₂ is the
        // transpose of a row-major count × (rows − k) matrix with leading dimension rows, and a
        // column-major C₂ is the transpose of a row-major one: C₂ᵀ = −Wᵀ·V₂ᵀ.
        guard rows > k else { return }
        w.values.withUnsafeBufferPointer { pw in
            if rowMajorResult {
                BLAS.gemm(transposeA: true, transposeB: false, m: rows - k, n: cols, k: k, alpha: -1, a: v + k, lda: rows,
                          b: pw.baseAddress!, ldb: cols, beta: 0, c: c + k * cols, ldc: cols)
            } else {
                BLAS.gemm(transposeA: true, transposeB: false, m: cols, n: rows - k, k: k, alpha: -1, a: pw.baseAddress!, lda: cols,
                          b: v + k, ldb: rows, beta: 0, c: c + k, ldc: rows)
            }
        }
    }
}
