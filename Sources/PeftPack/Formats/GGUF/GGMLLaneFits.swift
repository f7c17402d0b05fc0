/// ggml's per-sub-block fits (`make_qkx2_quants`, `make_qx_quants` in ggml-quants.c), run on all
/// sub-blocks of a super-block at once, one sub-block per SIMD lane. Each lane performs exactly
/// the scalar reference's fp32 operations in its order — IEEE arithmetic and square root are
/// lane-wise, and C's branches become compare-and-select on the lanes that take them — so every
/// lane's result is bit-identical to the C function on its sub-block. (Lanes ggml would have
/// left early compute on and are overwritten with the early result at the end.) These fits are
/// most of a K-quant's cost; in lanes Q4_K of [4096, 4096] took 0.56 s of CPU instead of 2.9 s
/// one sub-block at a time (the portable C reference: about 1.8 s).
enum GGMLLaneFits {
    typealias Lanes8 = SIMD8<Float>
    typealias Ints8 = SIMD8<Int32>

    /// `nearest_int` on each lane (see GGMLKQuantizer.nearestInt).
    @inline(__always)
    static func nearestInt(_ value: Lanes8) -> Ints8 {
        unsafeBitCast(value + 12_582_912, to: Ints8.self) & 0x007F_FFFF &- 0x0040_0000
    }

    /// `fabsf` on each lane: the sign bit cleared.
    @inline(__always)
    static func magnitude(_ value: Lanes8) -> Lanes8 {
        unsafeBitCast(unsafeBitCast(value, to: SIMD8<UInt32>.self) & 0x7FFF_FFFF, to: Lanes8.self)
    }

    /// `make_qkx2_quants(32, nmax, x, weights, L, &the_min, Laux, rmin, rdelta, steps, false)` on
    /// eight sub-blocks of 32: `x[i]` and `weights[i]` hold element i of every sub-block; quants L
    /// in 0…nmax and a scale and minimum with x ≈ scale · L − minimum, the minimum never negative.
    /// The grid starts at nmax / (max − min) and tries (rmin + rdelta · step + nmax) / (max − min)
    /// for steps 0…`steps`, keeping a weighted least-squares fit whose weighted squared error is
    /// strictly smaller. A sub-block whose max equals its min (after min is raised to 0) gets
    /// quants 0 and scale 0.
    @inline(__always)
    static func scaleAndMinimum(_ x: UnsafePointer<Lanes8>, weights: UnsafePointer<Lanes8>, nmax: Int32,
                                quants: UnsafeMutablePointer<Ints8>, scratch: UnsafeMutablePointer<Ints8>,
                                rmin: Float, rdelta: Float, steps: Int) -> (scale: Lanes8, minimum: Lanes8) {
        let n = 32, top = Ints8(repeating: nmax)
        @inline(__always) func level(_ iscale: Lanes8, _ shifted: Lanes8) -> Ints8 {
            pointwiseMax(.zero, pointwiseMin(top, nearestInt(iscale * shifted)))
        }
        var lowest = x[0], highest = x[0]
        var sumW = weights[0]
        var sumX = sumW * x[0]
        for i in 1..<n {
            lowest.replace(with: x[i], where: x[i] .< lowest)
            highest.replace(with: x[i], where: x[i] .> highest)
            let w = weights[i]
            sumW += w
            sumX += w * x[i]
        }
        lowest.replace(with: 0, where: lowest .> 0)
        let flat = highest .== lowest, flatLowest = lowest
        var iscale = Lanes8(repeating: Float(nmax)) / (highest - lowest)
        var scale = 1 / iscale
        var bestError = Lanes8.zero
        for i in 0..<n {
            quants[i] = level(iscale, x[i] - lowest)
            let diff = scale * Lanes8(quants[i]) + lowest - x[i]
            bestError += weights[i] * (diff * diff)
        }
        for step in 0...steps {
            // As ggml: min is the best fit's so far, in the range and in the offsets.
            iscale = Lanes8(repeating: rmin + rdelta * Float(step) + Float(nmax)) / (highest - lowest)
            var sumL = Lanes8.zero, sumL2 = Lanes8.zero, sumXL = Lanes8.zero
            for i in 0..<n {
                let l = level(iscale, x[i] - lowest)
                scratch[i] = l
                let w = weights[i], q = Lanes8(l)
                sumL += w * q
                sumL2 += w * q * q
                sumXL += w * q * x[i]
            }
            let determinant = sumW * sumL2 - sumL * sumL
            let solvable = determinant .> 0
            guard any(solvable) else { continue }
            var thisScale = (sumW * sumXL - sumX * sumL) / determinant
            var thisMin = (sumL2 * sumX - sumL * sumXL) / determinant
            let positive = thisMin .> 0
            thisMin.replace(with: 0, where: positive)
            thisScale.replace(with: sumXL / sumL2, where: positive)
            var error = Lanes8.zero
            for i in 0..<n {
                let diff = thisScale * Lanes8(scratch[i]) + thisMin - x[i]
                error += weights[i] * (diff * diff)
            }
            let better = solvable .& (error .< bestError)
            guard any(better) else { continue }
            for i in 0..<n { quants[i].replace(with: scratch[i], where: better) }
            bestError.replace(with: error, where: better)
            scale.replace(with: thisScale, where: better)
            lowest.replace(with: thisMin, where: better)
        }
        if any(flat) {
            for i in 0..<n { quants[i].replace(with: 0, where: flat) }
            scale.replace(with: 0, where: flat)
            lowest.replace(with: flatLowest, where: flat)
        }
        return (scale, -lowest)
    }

    /// `make_qx_quants(16, nmax, x, L, 1, NULL)` on eight sub-blocks of 16 (rmse_type 1: weights
    /// x², no early return): quants in −nmax…nmax−1, stored + nmax, for iscale = −nmax / max,
    /// where max is the value of largest magnitude (the first of equals), then for
    /// −(nmax + 0.1 · k) / max, k = −9…9, k ≠ 0, keeping the least-squares scale Σwxl / Σwl² of
    /// the one whose (Σwxl)² / Σwl² is strictly largest. A sub-block whose largest magnitude is
    /// below GROUP_MAX_EPS gets quants 0 and scale 0.
    @inline(__always)
    static func symmetricScale(_ x: UnsafePointer<Lanes8>, nmax: Int32, quants: UnsafeMutablePointer<Ints8>) -> Lanes8 {
        let n = 16, bottom = Ints8(repeating: -nmax), top = Ints8(repeating: nmax - 1), offset = Ints8(repeating: nmax)
        @inline(__always) func level(_ iscale: Lanes8, _ i: Int) -> Ints8 {
            pointwiseMax(bottom, pointwiseMin(top, nearestInt(iscale * x[i])))
        }
        var largest = Lanes8.zero, largestMagnitude = Lanes8.zero
        for i in 0..<n {
            let a = magnitude(x[i]), bigger = a .> largestMagnitude
            largestMagnitude.replace(with: a, where: bigger)
            largest.replace(with: x[i], where: bigger)
        }
        let negligible = largestMagnitude .< GGMLKQuantizer.groupMaxEpsilon
        var iscale = Lanes8(repeating: Float(-nmax)) / largest
        var sumLX = Lanes8.zero, sumL2 = Lanes8.zero
        for i in 0..<n {
            let l = level(iscale, i)
            quants[i] = l &+ offset
            let w = x[i] * x[i], q = Lanes8(l)
            sumLX += w * x[i] * q
            sumL2 += w * q * q
        }
        var scale = (sumLX / sumL2).replacing(with: 0, where: sumL2 .== 0)
        var best = scale * sumLX
        for k in -9...9 where k != 0 {
            iscale = Lanes8(repeating: -(Float(nmax) + 0.1 * Float(k))) / largest
            sumLX = .zero
            sumL2 = .zero
            for i in 0..<n {
                let w = x[i] * x[i], q = Lanes8(level(iscale, i))
                sumLX += w * x[i] * q
                sumL2 += w * q * q
            }
            let better = (sumL2 .> 0) .& (sumLX * sumLX .> best * sumL2)
            guard any(better) else { continue }
            for i in 0..<n { quants[i].replace(with: level(iscale, i) &+ offset, where: better) }
            let newScale = sumLX / sumL2
            scale.replace(with: newScale, where: better)
            best.replace(with: newScale * sumLX, where: better)
        }
        if any(negligible) {
            for i in 0..<n { quants[i].replace(with: 0, where: negligible) }
            scale.replace(with: 0, where: negligible)
        }
        return scale
    }
}
