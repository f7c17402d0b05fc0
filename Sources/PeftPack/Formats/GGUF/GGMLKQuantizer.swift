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
        Workspace.with { space in
            let columns = space.columns, weights = space.weights, quants = space.quants
            var sumSquares = GGMLLaneFits.Lanes8.zero
            for i in 0..<32 {
                for j in 0..<8 { columns[i][j] = x[32 * j + i] }
                sumSquares += columns[i] * columns[i]
            }
            let averageMagnitude = (sumSquares / 32).squareRoot()
            for i in 0..<32 { weights[i] = averageMagnitude + GGMLLaneFits.magnitude(columns[i]) }
            let (scales, minimums) = GGMLLaneFits.scaleAndMinimum(columns, weights: weights, nmax: nmax, quants: space.laneQuants,
                                                                  scratch: space.trialQuants, rmin: rmin, rdelta: 0.1, steps: steps)
            var maxScale: Float = 0, maxMinimum: Float = 0
            for j in 0..<8 {
                if scales[j] > maxScale { maxScale = scales[j] }
                if minimums[j] > maxMinimum { maxMinimum = minimums[j] }
                for i in 0..<32 { quants[32 * j + i] = UInt8(truncatingIfNeeded: space.laneQuants[i][j]) }
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

    /// Q6_K: sixteen sub-blocks of 16, each fitted by `make_qx_quants` (nmax 32, weights x²), in two
    /// passes of eight lanes; the sub-block scales quantized to int8 against the one of largest
    /// magnitude (d = 1 / (−128 / that scale), in fp16), then every quant recomputed from the
    /// stored scales as x / (d · scale) in −32…31, stored offset by 32.
    static func q6_K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer) {
        Workspace.with { space in
            let columns = space.columns, quants = space.quants, scales = space.scales
            var maxScale: Float = 0, maxAbsScale: Float = 0
            for pass in 0..<2 {
                for i in 0..<16 {
                    for lane in 0..<8 { columns[i][lane] = x[16 * (8 * pass + lane) + i] }
                }
                let fitted = GGMLLaneFits.symmetricScale(columns, nmax: 32, quants: space.laneQuants)
                for lane in 0..<8 {
                    let sub = 8 * pass + lane
                    scales[sub] = fitted[lane]
                    if abs(fitted[lane]) > maxAbsScale {
                        maxAbsScale = abs(fitted[lane])
                        maxScale = fitted[lane]
                    }
                    for i in 0..<16 { quants[16 * sub + i] = UInt8(truncatingIfNeeded: space.laneQuants[i][lane]) }
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

    /// One super-block's working memory, carved from one stack allocation: the sub-blocks'
    /// elements and weights in lane order, the lane fits' quants and trial quants, the final
    /// quants and the sub-block scales.
    struct Workspace {
        let columns, weights: UnsafeMutablePointer<GGMLLaneFits.Lanes8>
        let laneQuants, trialQuants: UnsafeMutablePointer<GGMLLaneFits.Ints8>
        let quants: UnsafeMutablePointer<UInt8>
        let scales: UnsafeMutablePointer<Float>

        @inline(__always)
        static func with<R>(_ body: (Workspace) -> R) -> R {
            let lanes = 32 * MemoryLayout<GGMLLaneFits.Lanes8>.stride
            return withUnsafeTemporaryAllocation(byteCount: 4 * lanes + elements + 16 * 4, alignment: 32) { raw in
                let base = raw.baseAddress!
                return body(Workspace(columns: base.bindMemory(to: GGMLLaneFits.Lanes8.self, capacity: 32),
                                      weights: (base + lanes).bindMemory(to: GGMLLaneFits.Lanes8.self, capacity: 32),
                                      laneQuants: (base + 2 * lanes).bindMemory(to: GGMLLaneFits.Ints8.self, capacity: 32),
                                      trialQuants: (base + 3 * lanes).bindMemory(to: GGMLLaneFits.Ints8.self, capacity: 32),
                                      quants: (base + 4 * lanes).bindMemory(to: UInt8.self, capacity: elements),
                                      scales: (base + 4 * lanes + elements).bindMemory(to: Float.self, capacity: 16)))
            }
        }
    }
}
