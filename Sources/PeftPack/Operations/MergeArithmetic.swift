import Foundation

/// The arithmetic of merging, on a tensor in its stored layout, in fp64: the factors (fp32 or
/// narrower) are exact in fp64, so W + s·B·A is computed to ~2⁻⁵³ and the caller's single
/// rounding to the output dtype is the correctly rounded exact merge.
enum MergeArithmetic {
    /// target += alpha · B·A in the stored orientation (BLAS sgemm, fp32 accumulation).
    static func addLowRank(_ target: inout [Double], orientation: WeightOrientation, a: [Double], b: [Double], rank: Int, alpha: Double) {
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                target.withUnsafeMutableBufferPointer { pc in
                    if orientation.transposed {
                        BLAS.gemm(transposeA: true, transposeB: true, m: orientation.inputs, n: orientation.out, k: rank, alpha: alpha,
                                  a: pa.baseAddress!, lda: orientation.inputs, b: pb.baseAddress!, ldb: rank,
                                  beta: 1, c: pc.baseAddress!, ldc: orientation.out)
                    } else {
                        BLAS.gemm(transposeA: false, transposeB: false, m: orientation.out, n: orientation.inputs, k: rank, alpha: alpha,
                                  a: pb.baseAddress!, lda: rank, b: pa.baseAddress!, ldb: orientation.inputs,
                                  beta: 1, c: pc.baseAddress!, ldc: orientation.inputs)
                    }
                }
            }
        }
    }

    /// DoRA as PEFT merges it: V = W + s·B·A, W' = (m / ‖V_o,:‖) · V per output row o; with weight
    /// w the result is W + w·(W' − W).
    static func applyDoRA(_ target: inout [Double], orientation: WeightOrientation, a: [Double], b: [Double], rank: Int,
                          scale: Double, magnitude: [Double], weight: Double) {
        var merged = target
        addLowRank(&merged, orientation: orientation, a: a, b: b, rank: rank, alpha: scale)
        for o in 0..<orientation.out {
            var squares = 0.0
            for i in 0..<orientation.inputs {
                let value = merged[orientation.offset(o, i)]
                squares += value * value
            }
            let factor = magnitude[o] / squares.squareRoot()
            for i in 0..<orientation.inputs {
                let index = orientation.offset(o, i)
                let dora = factor * merged[index]
                target[index] = weight == 1 ? dora : target[index] + weight * (dora - target[index])
            }
        }
    }

    /// IA3: scales the input features (side input) or output features (side output) by v^w, so
    /// weight −1 divides exactly what weight 1 multiplied. `isBias` applies the output scaling to
    /// a bias vector.
    static func applyIA3(_ target: inout [Double], orientation: WeightOrientation?, vector: [Double], side: IA3Side, weight: Double) {
        let factors = vector.map { weight == 1 ? $0 : pow($0, weight) }
        guard let orientation else {
            for index in target.indices { target[index] *= factors[index] }
            return
        }
        for o in 0..<orientation.out {
            for i in 0..<orientation.inputs {
                target[orientation.offset(o, i)] *= side == .input ? factors[i] : factors[o]
            }
        }
    }

    static func add(_ target: inout [Double], _ values: [Double], scale: Double) {
        for index in target.indices { target[index] += scale * values[index] }
    }
}
