import Foundation

/// Leading singular triplets of a matrix: A ≈ U·diag(S)·Vᵀ with U m×l, S descending, Vᵀ l×n.
public struct SingularTriplets {
    public var u: Matrix
    public var s: [Float]
    public var vt: Matrix
    /// True when this is a full SVD (every singular value), false for a randomized sketch whose
    /// last `oversample` values are less reliable.
    public var exact: Bool
}

/// Truncated SVD, randomized (Halko, Martinsson & Tropp 2011, algorithms 4.4 and 5.1) or exact
/// (sgesdd), on OpenBLAS/LAPACK.
public enum TruncatedSVD {
    /// Full thin SVD.
    public static func exact(_ a: Matrix) throws -> SingularTriplets {
        let (u, s, vt) = try LAPACK.svd(a)
        return SingularTriplets(u: u, s: s, vt: vt, exact: true)
    }

    /// The leading `rank + oversample` triplets: a Gaussian test matrix Ω (n×l) sketches the range
    /// Y = A·Ω, `powerIterations` rounds of Y ← A·(Aᵀ·Q) with QR re-orthonormalisation in between
    /// sharpen a slowly decaying spectrum, and an SVD of the small l×n matrix Qᵀ·A gives the
    /// triplets. Falls back to the exact SVD when the sketch would be at least half the matrix.
    public static func randomized(_ a: Matrix, rank: Int, oversample: Int, powerIterations: Int, seed: UInt64) throws -> SingularTriplets {
        let smaller = min(a.rows, a.cols)
        let width = min(rank + oversample, smaller)
        if 2 * width >= smaller { return try exact(a) }
        var random = SplitMix64(seed: seed)
        let omega = Matrix(rows: a.cols, cols: width, values: (0..<(a.cols * width)).map { _ in random.nextGaussian() })
        var q = try LAPACK.qr(BLAS.gemm(a, omega)).q
        for _ in 0..<powerIterations {
            let z = try LAPACK.qr(BLAS.gemm(a, q, transposeA: true)).q
            q = try LAPACK.qr(BLAS.gemm(a, z)).q
        }
        let small = BLAS.gemm(q, a, transposeA: true)
        let (smallU, s, vt) = try LAPACK.svd(small)
        return SingularTriplets(u: BLAS.gemm(q, smallU), s: s, vt: vt, exact: false)
    }
}

/// SplitMix64 (Steele, Lea & Flood 2014): a small seeded generator, so a test matrix depends only
/// on the seed, never on the platform's random source.
public struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    private var spare: Float?

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Standard normal by Box–Muller.
    public mutating func nextGaussian() -> Float {
        if let spare {
            self.spare = nil
            return spare
        }
        let u1 = (Double(next() >> 11) + 0.5) / Double(1 << 53), u2 = Double(next() >> 11) / Double(1 << 53)
        let radius = (-2 * log(u1)).squareRoot()
        spare = Float(radius * sin(2 * .pi * u2))
        return Float(radius * cos(2 * .pi * u2))
    }
}
