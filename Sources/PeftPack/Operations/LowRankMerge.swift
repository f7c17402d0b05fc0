import CDTypeKernels
import Foundation

/// The fast path of merging: a base weight that only low-rank terms change (LoRA and rsLoRA, from
/// any number of adapters). ΔW is formed a block of stored rows at a time by dgemm into a
/// cache-sized fp64 scratch and folded into the base by a fused kernel that rounds once, so the
/// tensor is read once and written once and ΔW never exists in full. Row ranges are split across
/// the cores.
///
/// fp64 rather than fp32 for ΔW: the factors are exact in fp64, so the merge is the correctly
/// rounded exact merge except at ties closer than ~2⁻⁴⁵ relative. With an fp32 sgemm about one
/// element in 10⁴ of a bf16 merge landed on the wrong side of a rounding boundary (measured on the
/// llama_bf16_lora fixture), and the block stays in cache either way.
enum LowRankMerge {
    struct Term {
        var a: [Double]
        var b: [Double]
        var rank: Int
        /// scale · weight.
        var alpha: Double
    }

    struct Statistics {
        var changed = 0
        var lost = 0
        var maxAbsDelta = 0.0
        /// Outputs that are NaN or ±Inf where the base element is finite.
        var nonFinite = 0
    }

    /// Scratch per worker: 128 Ki doubles (1 MiB) keeps a block of ΔW in L2 between the dgemm
    /// that writes it and the kernel that reads it.
    static let scratchElements = 1 << 17

    static func elementType(_ dtype: DType) -> Int32? {
        switch dtype {
        case .f32: Int32(PEFTPACK_ELEMENT_F32)
        case .bf16: Int32(PEFTPACK_ELEMENT_BF16)
        case .f16: Int32(PEFTPACK_ELEMENT_F16)
        default: nil
        }
    }

    static func supports(storedShape: [Int], baseType: DType, outType: DType) -> Bool {
        storedShape.count == 2 && elementType(baseType) != nil && elementType(outType) != nil
    }

    /// out = round(base + Σ alphaᵢ·BᵢAᵢ) in the stored orientation.
    static func merge(base: UnsafeRawBufferPointer, baseType: DType, orientation: WeightOrientation,
                      terms: [Term], outType: DType, into out: UnsafeMutableRawBufferPointer) -> Statistics {
        let rows = orientation.storedRows, columns = orientation.storedColumns
        let baseElement = elementType(baseType)!, outElement = elementType(outType)!
        let baseSize = baseType.byteSize, outSize = outType.byteSize
        let blockRows = max(1, min(rows, scratchElements / max(columns, 1)))
        let workers = max(1, min(Cores.active, (rows + blockRows - 1) / blockRows))
        var perWorker = [Statistics](repeating: Statistics(), count: workers)
        perWorker.withUnsafeMutableBufferPointer { results in
            DispatchQueue.concurrentPerform(iterations: workers) { worker in
                let first = rows * worker / workers, end = rows * (worker + 1) / workers
                var scratch = [Double](repeating: 0, count: blockRows * columns)
                var stats = peftpack_merge_stats()
                var row = first
                while row < end {
                    let count = min(blockRows, end - row)
                    scratch.withUnsafeMutableBufferPointer { delta in
                        for (position, term) in terms.enumerated() {
                            accumulate(term, rows: row..<(row + count), orientation: orientation, into: delta.baseAddress!,
                                       overwrite: position == 0)
                        }
                        peftpack_merge_add(baseElement, base.baseAddress! + row * columns * baseSize, delta.baseAddress!,
                                           outElement, out.baseAddress! + row * columns * outSize, count * columns, &stats)
                    }
                    row += count
                }
                results[worker] = Statistics(changed: Int(stats.changed), lost: Int(stats.lost), maxAbsDelta: stats.max_abs_delta,
                                             nonFinite: Int(stats.nonfinite))
            }
        }
        return perWorker.reduce(into: Statistics()) { total, part in
            total.changed += part.changed
            total.lost += part.lost
            total.maxAbsDelta = max(total.maxAbsDelta, part.maxAbsDelta)
            total.nonFinite += part.nonFinite
        }
    }

    /// delta[rows, :] (+)= alpha · (B·A) restricted to the given stored rows.
    private static func accumulate(_ term: Term, rows: Range<Int>, orientation: WeightOrientation,
                                   into delta: UnsafeMutablePointer<Double>, overwrite: Bool) {
        let columns = orientation.storedColumns
        guard term.rank > 0 else {
            if overwrite { delta.update(repeating: 0, count: rows.count * columns) }
            return
        }
        term.a.withUnsafeBufferPointer { a in
            term.b.withUnsafeBufferPointer { b in
                if orientation.transposed {
                    // Stored [in, out]: rows are input features; (BA)ᵀ[i, :] = A[:, i]ᵀ·Bᵀ.
                    BLAS.gemm(transposeA: true, transposeB: true, m: rows.count, n: orientation.out, k: term.rank, alpha: term.alpha,
                              a: a.baseAddress! + rows.lowerBound, lda: orientation.inputs, b: b.baseAddress!, ldb: term.rank,
                              beta: overwrite ? 0 : 1, c: delta, ldc: orientation.out)
                } else {
                    BLAS.gemm(transposeA: false, transposeB: false, m: rows.count, n: orientation.inputs, k: term.rank, alpha: term.alpha,
                              a: b.baseAddress! + rows.lowerBound * term.rank, lda: term.rank, b: a.baseAddress!, ldb: orientation.inputs,
                              beta: overwrite ? 0 : 1, c: delta, ldc: orientation.inputs)
                }
            }
        }
    }
}
