import Testing
@testable import PeftPack

/// The BLAS/LAPACK wrappers are checked against mathematics, not against themselves: products
/// against a naive fp64 loop, factorizations by reconstruction and orthogonality.
@Suite struct LinearAlgebraTests {
    static func random(_ rows: Int, _ cols: Int, seed: UInt64) -> Matrix {
        var generator = SplitMix(seed: seed)
        return Matrix(rows: rows, cols: cols, values: (0..<(rows * cols)).map { _ in Float(Double(generator.next() >> 11) / Double(1 << 53) * 2 - 1) })
    }

    static func naiveProduct(_ a: Matrix, _ b: Matrix) -> [Double] {
        var out = [Double](repeating: 0, count: a.rows * b.cols)
        for i in 0..<a.rows {
            for j in 0..<b.cols {
                var sum = 0.0
                for p in 0..<a.cols { sum += Double(a[i, p]) * Double(b[p, j]) }
                out[i * b.cols + j] = sum
            }
        }
        return out
    }

    /// fp32 accumulation over k = 70 terms of magnitude ≤ 1: error ≲ k·2⁻²⁴·Σ|a||b| ≈ 1e-4 at
    /// worst; 1e-4 absolute leaves no room for a wrong transpose or layout (errors would be O(1)).
    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func gemmMatchesNaiveProduct(transposeA: Bool, transposeB: Bool) {
        let a = Self.random(33, 70, seed: 1), b = Self.random(70, 41, seed: 2)
        let expected = Self.naiveProduct(a, b)
        let product = BLAS.gemm(transposeA ? a.transposed : a, transposeB ? b.transposed : b, transposeA: transposeA, transposeB: transposeB)
        #expect(product.rows == 33 && product.cols == 41)
        let worst = zip(product.values, expected).map { abs(Double($0) - $1) }.max()!
        #expect(worst < 1e-4)
    }

    @Test func svdReconstructsAndIsOrthonormal() throws {
        let a = Self.random(200, 120, seed: 3)
        let (u, s, vt) = try LAPACK.svd(a)
        #expect(u.rows == 200 && u.cols == 120 && vt.rows == 120 && vt.cols == 120)
        #expect(zip(s, s.dropFirst()).allSatisfy { $0 >= $1 })
        var scaled = u
        for row in 0..<u.rows { for col in 0..<u.cols { scaled[row, col] *= s[col] } }
        let rebuilt = BLAS.gemm(scaled, vt)
        let error = Matrix(rows: 200, cols: 120, values: zip(rebuilt.values, a.values).map { $0 - $1 }).frobeniusNorm
        #expect(error / a.frobeniusNorm < 1e-5)
        let gram = BLAS.gemm(u, u, transposeA: true)
        for i in 0..<120 { for j in 0..<120 { #expect(abs(gram[i, j] - (i == j ? 1 : 0)) < 1e-5) } }
    }

    @Test func qrReconstructsWithOrthonormalQ() throws {
        let a = Self.random(150, 40, seed: 4)
        let (q, r) = try LAPACK.qr(a)
        for row in 1..<r.rows { for col in 0..<row { #expect(r[row, col] == 0) } }
        let rebuilt = BLAS.gemm(q, r)
        let error = Matrix(rows: 150, cols: 40, values: zip(rebuilt.values, a.values).map { $0 - $1 }).frobeniusNorm
        #expect(error / a.frobeniusNorm < 1e-5)
        let gram = BLAS.gemm(q, q, transposeA: true)
        for i in 0..<40 { for j in 0..<40 { #expect(abs(gram[i, j] - (i == j ? 1 : 0)) < 1e-5) } }
    }

    /// The in-place column-major QR gives back the matrix when Q's leading columns multiply its
    /// own R, tall or wide, written row-major or column-major; a wrong T, reflector layout or
    /// stride would be O(1) off.
    @Test(arguments: [(150, 40, true), (150, 40, false), (30, 40, true), (30, 40, false)])
    func compactWYLeadingColumnsRebuildTheMatrix(rows: Int, cols: Int, rowMajorResult: Bool) throws {
        let original = Self.random(rows, cols, seed: 5)
        var columnMajor = original.transposed.values
        let count = min(rows, cols)
        let factors = try columnMajor.withUnsafeMutableBufferPointer { try LAPACK.qrInPlace($0.baseAddress!, rows: rows, cols: cols) }
        var r = Matrix(zeros: count, cols)
        for i in 0..<count {
            for l in i..<cols { r[i, l] = columnMajor[i + l * rows] }
        }
        var rebuilt = [Float](repeating: .nan, count: rows * cols)
        columnMajor.withUnsafeBufferPointer { reflectors in
            rebuilt.withUnsafeMutableBufferPointer { out in
                factors.leadingColumns(times: r, reflectors: reflectors.baseAddress!, rows: rows, rowMajorResult: rowMajorResult, into: out.baseAddress!)
            }
        }
        let rowMajor = rowMajorResult ? rebuilt : Matrix(rows: cols, cols: rows, values: rebuilt).transposed.values
        let error = Matrix(rows: rows, cols: cols, values: zip(rowMajor, original.values).map { $0 - $1 }).frobeniusNorm
        #expect(error / original.frobeniusNorm < 1e-5)
    }

    @Test func threadCountCanBeSet() {
        let before = BLAS.threadCount
        BLAS.threadCount = 1
        #expect(BLAS.threadCount == 1)
        BLAS.threadCount = before
    }
}
