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

/// Householder QR and LQ in column-major storage, in place, with Q kept in LAPACK's compact WY
/// form (sgeqrt/sgelqt) and applied by its block reflectors (sgemqrt/sgemlqt) instead of being
/// formed. A row-major m×n buffer is the column-major n×m transpose, so callers factor the
/// transpose of what they hold rather than have LAPACKE copy it to column-major and back; and the
/// recursive panel (sgeqrt3) stays level-3 BLAS for the thin matrices of a stack, where sgeqrf's
/// unblocked path for ≤ 32 columns is matrix-vector products.
extension LAPACK {
    /// The reflectors' block triangular factors T (blockSize × count, column-major); the
    /// reflectors themselves stay in the factored buffer.
    public struct CompactWY {
        public var t: [Float]
        public var blockSize: Int
        /// min(rows, cols) of the factored matrix.
        public var count: Int
    }

    /// Block size for the compact WY factors: the whole panel for the ranks a stack sees
    /// (LAPACK's own default is 32).
    static func blockSize(_ count: Int) -> Int { max(1, min(count, 64)) }

    /// A = Q·R for the column-major rows×cols A (leading dimension rows): R on and above the
    /// diagonal, the reflectors below it.
    public static func qrInPlace(_ a: UnsafeMutablePointer<Float>, rows: Int, cols: Int) throws -> CompactWY {
        let count = min(rows, cols), nb = blockSize(count)
        var factors = CompactWY(t: [Float](repeating: 0, count: nb * count), blockSize: nb, count: count)
        var work = [Float](repeating: 0, count: nb * cols)
        let info = peftpack_sgeqrt(Int32(rows), Int32(cols), Int32(nb), a, Int32(max(1, rows)), &factors.t, Int32(nb), &work)
        guard info == 0 else { throw LinearAlgebraError.lapackFailed(routine: "sgeqrt", info: info) }
        return factors
    }

    /// C ← Q·C for the column-major rows×cols C, Q from `qrInPlace` of a `rows`-row matrix.
    public static func applyQ(_ factors: CompactWY, reflectors: UnsafePointer<Float>, to c: UnsafeMutablePointer<Float>,
                              rows: Int, cols: Int) throws {
        var work = [Float](repeating: 0, count: factors.blockSize * cols)
        let info = peftpack_sgemqrt_left(Int32(rows), Int32(cols), Int32(factors.count), Int32(factors.blockSize), reflectors,
                                         Int32(max(1, rows)), factors.t, Int32(factors.blockSize), c, Int32(max(1, rows)), &work)
        guard info == 0 else { throw LinearAlgebraError.lapackFailed(routine: "sgemqrt", info: info) }
    }

    /// A = L·Q for the column-major rows×cols A (leading dimension rows): L on and below the
    /// diagonal, the reflectors (as rows) above it.
    public static func lqInPlace(_ a: UnsafeMutablePointer<Float>, rows: Int, cols: Int) throws -> CompactWY {
        let count = min(rows, cols), mb = blockSize(count)
        var factors = CompactWY(t: [Float](repeating: 0, count: mb * count), blockSize: mb, count: count)
        var work = [Float](repeating: 0, count: mb * rows)
        let info = peftpack_sgelqt(Int32(rows), Int32(cols), Int32(mb), a, Int32(max(1, rows)), &factors.t, Int32(mb), &work)
        guard info == 0 else { throw LinearAlgebraError.lapackFailed(routine: "sgelqt", info: info) }
        return factors
    }

    /// C ← C·Q for the column-major rows×cols C, Q from `lqInPlace` of a matrix whose leading
    /// dimension was `reflectorRows`.
    public static func applyLQ(_ factors: CompactWY, reflectors: UnsafePointer<Float>, reflectorRows: Int,
                               to c: UnsafeMutablePointer<Float>, rows: Int, cols: Int) throws {
        var work = [Float](repeating: 0, count: factors.blockSize * rows)
        let info = peftpack_sgemlqt_right(Int32(rows), Int32(cols), Int32(factors.count), Int32(factors.blockSize), reflectors,
                                          Int32(max(1, reflectorRows)), factors.t, Int32(factors.blockSize), c, Int32(max(1, rows)), &work)
        guard info == 0 else { throw LinearAlgebraError.lapackFailed(routine: "sgemlqt", info: info) }
    }
}
