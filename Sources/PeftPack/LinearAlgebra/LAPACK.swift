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
