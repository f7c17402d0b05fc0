/// One 256-value super-block of each K-quant, as ggml's reference quantizers compute it
/// (`quantize_row_q4_K_ref`, `quantize_row_q5_K_ref`, `quantize_row_q6_K_ref` and their helpers
/// `make_qkx2_quants`, `make_qx_quants`, `nearest_int` in ggml/src/ggml-quants.c of the pinned
/// llama.cpp) — the path llama-quantize takes without an imatrix.
///
/// "As ggml computes it" means that C code compiled portably: x86-64 SSE scalar fp32 arithmetic,
/// no -march=native and -ffp-contract=off, so no product is fused into an add (a fused build
/// picks other scales on some blocks; scripts/ggml-quantize-reference.sh counts them). Every
/// expression below keeps C's evaluation order and its int → float conversions (`w*l*l` is
/// (w·l)·l), and Swift neither contracts nor reorders fp32 arithmetic. Where ggml skips a
/// sub-block whose stored scale is 0 it keeps the quants of the search, and so does this.
enum GGMLKQuantizer {
    static let elements = 256
    /// ggml's GROUP_MAX_EPS: below it a group's largest magnitude counts as all zero.
    static let groupMaxEpsilon: Float = 1e-15

    /// ggml's `nearest_int`: adding 1.5 · 2²³ leaves the rounded (ties to even) integer in the low
    /// mantissa bits, which ggml reads back without checking the range (asserts are off in a
    /// release build), so NaN reads as 0 here as there.
    @inline(__always)
    static func nearestInt(_ value: Float) -> Int32 {
        let shifted = value + 12_582_912
        return Int32(bitPattern: shifted.bitPattern & 0x007F_FFFF) - 0x0040_0000
    }

    /// GGML_FP32_TO_FP16: round to nearest even (the only scales ggml stores are never NaN, where
    /// ggml's bit trick and the conversion would differ).
    @inline(__always)
    static func half(_ value: Float) -> UInt16 { Float16(value).bitPattern }

    @inline(__always)
    static func widen(_ bits: UInt16) -> Float { Float(Float16(bitPattern: bits)) }

    static func q4_K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer) {
        scaleMinimumBlock(x, y, nmax: 15, rmin: -1, steps: 20) { quants in
            let q = y + 16
            for chunk in 0..<4 {
                for l in 0..<32 {
                    q.storeBytes(of: quants[chunk * 64 + l] | quants[chunk * 64 + l + 32] << 4, toByteOffset: chunk * 32 + l, as: UInt8.self)
                }
            }
        }
    }

    static func q5_K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer) {
        scaleMinimumBlock(x, y, nmax: 31, rmin: -0.5, steps: 15) { quants in
            // 32 bytes of fifth bits (bit 2c of byte j: element 64c + j; bit 2c + 1: 64c + 32 + j),
            // then the low nibbles as in Q4_K.
            let high = y + 16, low = y + 48
            for j in 0..<32 { high.storeBytes(of: 0, toByteOffset: j, as: UInt8.self) }
            for chunk in 0..<4 {
                for j in 0..<32 {
                    let first = quants[chunk * 64 + j], second = quants[chunk * 64 + j + 32]
                    let bits = (first >> 4) << (2 * chunk) | (second >> 4) << (2 * chunk + 1)
                    high.storeBytes(of: high.load(fromByteOffset: j, as: UInt8.self) | bits, toByteOffset: j, as: UInt8.self)
                    low.storeBytes(of: (first & 0x0F) | (second & 0x0F) << 4, toByteOffset: chunk * 32 + j, as: UInt8.self)
                }
            }
        }
    }

    /// Q4_K and Q5_K: eight sub-blocks of 32, each fitted by `make_qkx2_quants` with the weights
    /// √(mean x²) + |x|; the sub-block scales and minimums quantized to 6 bits against the largest
    /// of each (d = max scale / 63, dmin = max minimum / 63 in fp16), then every quant recomputed
    /// from the stored scales. `pack` writes the quants (each ≤ nmax) after the 16 header bytes.
    @inline(__always)
    static func scaleMinimumBlock(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, nmax: Int32, rmin: Float, steps: Int,
                                  pack: (UnsafeMutablePointer<UInt8>) -> Void) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: elements + 32) { quantBuffer in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 32 + 8 + 8) { floatBuffer in
                let quants = quantBuffer.baseAddress!, scratch = quants + elements
                let weights = floatBuffer.baseAddress!, scales = weights + 32, minimums = scales + 8
                var maxScale: Float = 0, maxMinimum: Float = 0
                for j in 0..<8 {
                    let sub = x + 32 * j
                    var sumSquares: Float = 0
                    for l in 0..<32 { sumSquares += sub[l] * sub[l] }
                    let averageMagnitude = (sumSquares / 32).squareRoot()
                    for l in 0..<32 { weights[l] = averageMagnitude + abs(sub[l]) }
                    scales[j] = fitScaleAndMinimum(sub, weights: weights, nmax: nmax, quants: quants + 32 * j, scratch: scratch,
                                                   minimum: &minimums[j], rmin: rmin, rdelta: 0.1, steps: steps)
                    if scales[j] > maxScale { maxScale = scales[j] }
                    if minimums[j] > maxMinimum { maxMinimum = minimums[j] }
                }
                let inverseScale: Float = maxScale > 0 ? 63 / maxScale : 0
                let inverseMinimum: Float = maxMinimum > 0 ? 63 / maxMinimum : 0
                let packed = (y + 4).assumingMemoryBound(to: UInt8.self)
                for j in 0..<8 {
                    // ggml stores nearest_int into a uint8 (modulo 256) before clamping to 63.
                    let ls = min(63, UInt8(truncatingIfNeeded: nearestInt(inverseScale * scales[j])))
                    let lm = min(63, UInt8(truncatingIfNeeded: nearestInt(inverseMinimum * minimums[j])))
                    if j < 4 {
                        packed[j] = ls
                        packed[j + 4] = lm
                    } else {
                        packed[j + 4] = (ls & 0x0F) | (lm & 0x0F) << 4
                        packed[j - 4] |= (ls >> 4) << 6
                        packed[j] |= (lm >> 4) << 6
                    }
                }
                let d = half(maxScale / 63), dmin = half(maxMinimum / 63)
                y.storeBytes(of: d.littleEndian, toByteOffset: 0, as: UInt16.self)
                y.storeBytes(of: dmin.littleEndian, toByteOffset: 2, as: UInt16.self)
                let header = UnsafeRawBufferPointer(start: y, count: 16)
                for j in 0..<8 {
                    let (sc, m) = GGMLBlocks.scaleAndMinimum(header, at: 4, sub: j)
                    let scale = widen(d) * Float(sc)
                    if scale == 0 { continue }
                    let offset = widen(dmin) * Float(m)
                    for i in 0..<32 {
                        let l = nearestInt((x[32 * j + i] + offset) / scale)
                        quants[32 * j + i] = UInt8(max(0, min(nmax, l)))
                    }
                }
                pack(quants)
            }
        }
    }

    /// `make_qkx2_quants` (use_mad false): quants L in 0…nmax and a scale and minimum with
    /// x ≈ scale · L − minimum, the minimum never negative (the fit may not add an offset); the
    /// grid starts at nmax / (max − min) and tries (rmin + rdelta · step + nmax) / (max − min) for
    /// steps 0…`steps`, keeping a weighted least-squares fit whose weighted squared error is
    /// strictly smaller. Returns the scale; `minimum` receives −min.
    @inline(__always)
    static func fitScaleAndMinimum(_ x: UnsafePointer<Float>, weights: UnsafePointer<Float>, nmax: Int32,
                                   quants: UnsafeMutablePointer<UInt8>, scratch: UnsafeMutablePointer<UInt8>,
                                   minimum: inout Float, rmin: Float, rdelta: Float, steps: Int) -> Float {
        let n = 32
        var lowest = x[0], highest = x[0]
        var sumW = weights[0]
        var sumX = sumW * x[0]
        for i in 1..<n {
            if x[i] < lowest { lowest = x[i] }
            if x[i] > highest { highest = x[i] }
            let w = weights[i]
            sumW += w
            sumX += w * x[i]
        }
        if lowest > 0 { lowest = 0 }
        if highest == lowest {
            for i in 0..<n { quants[i] = 0 }
            minimum = -lowest
            return 0
        }
        let levels = Float(nmax)
        var iscale = levels / (highest - lowest)
        var scale = 1 / iscale
        var bestError: Float = 0
        for i in 0..<n {
            let l = nearestInt(iscale * (x[i] - lowest))
            quants[i] = UInt8(max(0, min(nmax, l)))
            let diff = scale * Float(quants[i]) + lowest - x[i]
            bestError += weights[i] * (diff * diff)
        }
        for step in 0...steps {
            iscale = (rmin + rdelta * Float(step) + levels) / (highest - lowest)
            var sumL: Float = 0, sumL2: Float = 0, sumXL: Float = 0
            for i in 0..<n {
                let l = max(0, min(nmax, nearestInt(iscale * (x[i] - lowest))))
                scratch[i] = UInt8(l)
                let w = weights[i], q = Float(l)
                sumL += w * q
                sumL2 += w * q * q
                sumXL += w * q * x[i]
            }
            let determinant = sumW * sumL2 - sumL * sumL
            guard determinant > 0 else { continue }
            var thisScale = (sumW * sumXL - sumX * sumL) / determinant
            var thisMin = (sumL2 * sumX - sumL * sumXL) / determinant
            if thisMin > 0 {
                thisMin = 0
                thisScale = sumXL / sumL2
            }
            var error: Float = 0
            for i in 0..<n {
                let diff = thisScale * Float(scratch[i]) + thisMin - x[i]
                error += weights[i] * (diff * diff)
            }
            if error < bestError {
                for i in 0..<n { quants[i] = scratch[i] }
                bestError = error
                scale = thisScale
                lowest = thisMin
            }
        }
        minimum = -lowest
        return scale
    }

    /// Q6_K: sixteen sub-blocks of 16, each fitted by `make_qx_quants` (nmax 32, weights x²); the
    /// sub-block scales quantized to int8 against the one of largest magnitude (d = its scale /
    /// −128 … as 1 / (−128 / scale), in fp16), then every quant recomputed from the stored scales
    /// as x / (d · scale) in −32…31, stored offset by 32.
    static func q6_K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: elements) { quantBuffer in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 16) { scaleBuffer in
                let quants = quantBuffer.baseAddress!, scales = scaleBuffer.baseAddress!
                var maxScale: Float = 0, maxAbsScale: Float = 0
                for sub in 0..<16 {
                    let scale = fitSymmetricScale(x + 16 * sub, nmax: 32, quants: quants + 16 * sub)
                    scales[sub] = scale
                    if abs(scale) > maxAbsScale {
                        maxAbsScale = abs(scale)
                        maxScale = scale
                    }
                }
                if maxAbsScale < groupMaxEpsilon {
                    y.initializeMemory(as: UInt8.self, repeating: 0, count: 210)
                    return
                }
                let iscale = -128 / maxScale
                let d = half(1 / iscale)
                y.storeBytes(of: d.littleEndian, toByteOffset: 208, as: UInt16.self)
                for sub in 0..<16 {
                    let stored = Int8(truncatingIfNeeded: min(127, nearestInt(iscale * scales[sub])))
                    y.storeBytes(of: stored, toByteOffset: 192 + sub, as: Int8.self)
                    let scale = widen(d) * Float(stored)
                    if scale == 0 { continue }
                    for i in 0..<16 {
                        let l = nearestInt(x[16 * sub + i] / scale)
                        quants[16 * sub + i] = UInt8(max(-32, min(31, l)) + 32)
                    }
                }
                // Each half of 128: low nibbles of elements r and r + 64 share byte r of its 64;
                // the two high bits of elements l, l + 32, l + 64, l + 96 share byte l of its 32.
                for part in 0..<2 {
                    let q = quants + 128 * part
                    let low = y + 64 * part, high = y + 128 + 32 * part
                    for l in 0..<32 {
                        low.storeBytes(of: (q[l] & 0x0F) | (q[l + 64] & 0x0F) << 4, toByteOffset: l, as: UInt8.self)
                        low.storeBytes(of: (q[l + 32] & 0x0F) | (q[l + 96] & 0x0F) << 4, toByteOffset: l + 32, as: UInt8.self)
                        let bits = q[l] >> 4 | (q[l + 32] >> 4) << 2 | (q[l + 64] >> 4) << 4 | (q[l + 96] >> 4) << 6
                        high.storeBytes(of: bits, toByteOffset: l, as: UInt8.self)
                    }
                }
            }
        }
    }

    /// `make_qx_quants` with rmse_type 1 (weights x², no early return): quants in −nmax…nmax−1
    /// (stored + nmax) for iscale = −nmax / max, where max is the value of largest magnitude, then
    /// (nmax + 0.1 · k) for k = −9…9, k ≠ 0, keeping the least-squares scale Σwxl / Σwl² of the one
    /// whose (Σwxl)² / Σwl² is strictly largest. A group whose magnitude is below GROUP_MAX_EPS
    /// gets quants 0 and scale 0.
    @inline(__always)
    static func fitSymmetricScale(_ x: UnsafePointer<Float>, nmax: Int32, quants: UnsafeMutablePointer<UInt8>) -> Float {
        let n = 16
        var largest: Float = 0, largestMagnitude: Float = 0
        for i in 0..<n where abs(x[i]) > largestMagnitude {
            largestMagnitude = abs(x[i])
            largest = x[i]
        }
        if largestMagnitude < groupMaxEpsilon {
            for i in 0..<n { quants[i] = 0 }
            return 0
        }
        @inline(__always) func level(_ iscale: Float, _ i: Int) -> Int32 { max(-nmax, min(nmax - 1, nearestInt(iscale * x[i]))) }
        var iscale = Float(-nmax) / largest
        var sumLX: Float = 0, sumL2: Float = 0
        for i in 0..<n {
            let l = level(iscale, i)
            quants[i] = UInt8(l + nmax)
            let w = x[i] * x[i], q = Float(l)
            sumLX += w * x[i] * q
            sumL2 += w * q * q
        }
        var scale = sumL2 != 0 ? sumLX / sumL2 : 0
        var best = scale * sumLX
        for k in -9...9 where k != 0 {
            iscale = -(Float(nmax) + 0.1 * Float(k)) / largest
            sumLX = 0
            sumL2 = 0
            for i in 0..<n {
                let w = x[i] * x[i], q = Float(level(iscale, i))
                sumLX += w * x[i] * q
                sumL2 += w * q * q
            }
            if sumL2 > 0 && sumLX * sumLX > best * sumL2 {
                for i in 0..<n { quants[i] = UInt8(level(iscale, i) + nmax) }
                scale = sumLX / sumL2
                best = scale * sumLX
            }
        }
        return scale
    }
}
