import Foundation

/// The fp32 sum torch 2.x computes on an AVX2 CPU for a contiguous 1-D float tensor
/// (`aten/src/ATen/native/cpu/SumKernel.cpp`, `vectorized_inner_sum` → `row_sum` →
/// `multi_row_sum`): 8-lane vectors, four interleaved accumulators, each a 4-level cascade whose
/// levels fold every 2^max(4, ⌈log2 n⌉/4) vectors; then the scalar tail and the eight lanes in order.
/// From 32,768 elements (at::internal::GRAIN_SIZE) on, with more than one intra-op thread, torch's
/// two-pass reduction (TensorIteratorReduce.cpp) splits the tensor into min(threads, ⌈n / 32,768⌉)
/// equal chunks (⌈n / chunks⌉ elements, the last shorter), sums each so, and adds the chunk sums
/// in order. bitsandbytes' double quantization subtracts `absmax.mean()` (this sum ÷ n in fp32) from
/// every absmax, so the offset, and through it every nested code, depends on this exact order: a
/// plain or fp64 sum rounds differently for about half the inputs. The thread count is the
/// machine's: torch's default intra-op threads (`torchThreads`), which PEFT's merge ran with.
enum TorchCPUSum {
    static let lanes = 8
    static let interleave = 4
    static let levels = 4
    static let grainSize = 32_768

    /// torch's default intra-op thread count as peftpack can know it: OMP_NUM_THREADS when set
    /// (torch reads it), else the active processors (torch counts physical cores, which is the
    /// same number without simultaneous multithreading).
    static var torchThreads: Int {
        if let text = ProcessInfo.processInfo.environment["OMP_NUM_THREADS"], let count = Int(text), count > 0 { return count }
        return Cores.active
    }

    static func mean(_ values: [Float], threads: Int = torchThreads) -> Float {
        sum(values, threads: threads) / Float(values.count)
    }

    static func sum(_ values: [Float], threads: Int) -> Float {
        guard values.count >= grainSize, threads > 1 else { return sum(values[...]) }
        let chunks = min(threads, (values.count + grainSize - 1) / grainSize)
        let chunk = (values.count + chunks - 1) / chunks
        var total: Float = 0
        for start in stride(from: 0, to: values.count, by: chunk) {
            total += sum(values[start..<min(start + chunk, values.count)])
        }
        return total
    }

    static func sum(_ slice: ArraySlice<Float>) -> Float {
        let values = Array(slice)
        let vectorCount = values.count / lanes
        let lanesSum = rowSum(values, vectors: vectorCount)
        var total: Float = 0
        for index in (vectorCount * lanes)..<values.count { total += values[index] }
        for lane in 0..<lanes { total += lanesSum[lane] }
        return total
    }

    /// `row_sum` over whole 8-lane vectors: four interleaved cascades, the leftover vectors added
    /// to the first, then the four folded in order.
    private static func rowSum(_ values: [Float], vectors: Int) -> [Float] {
        let groups = vectors / interleave
        var partial = multiRowSum(values, groups: groups)
        for vector in (groups * interleave)..<vectors {
            for lane in 0..<lanes { partial[0][lane] += values[vector * lanes + lane] }
        }
        for row in 1..<interleave {
            for lane in 0..<lanes { partial[0][lane] += partial[row][lane] }
        }
        return partial[0]
    }

    private static func ceilLog2(_ value: Int) -> Int {
        value <= 1 ? 0 : Int.bitWidth - (value - 1).leadingZeroBitCount
    }

    /// `multi_row_sum`: `groups` groups of four vectors, each accumulated in its own cascade.
    private static func multiRowSum(_ values: [Float], groups: Int) -> [[Float]] {
        let levelPower = max(4, ceilLog2(groups) / levels)
        let levelStep = 1 << levelPower
        let levelMask = levelStep - 1
        let zero = [Float](repeating: 0, count: lanes)
        var accumulators = [[[Float]]](repeating: [[Float]](repeating: zero, count: interleave), count: levels)
        func addGroup(_ group: Int) {
            for row in 0..<interleave {
                let base = (group * interleave + row) * lanes
                for lane in 0..<lanes { accumulators[0][row][lane] += values[base + lane] }
            }
        }
        var group = 0
        while group + levelStep <= groups {
            for _ in 0..<levelStep {
                addGroup(group)
                group += 1
            }
            for level in 1..<levels {
                for row in 0..<interleave {
                    for lane in 0..<lanes {
                        accumulators[level][row][lane] += accumulators[level - 1][row][lane]
                        accumulators[level - 1][row][lane] = 0
                    }
                }
                if group & (levelMask << (level * levelPower)) != 0 { break }
            }
        }
        while group < groups {
            addGroup(group)
            group += 1
        }
        for level in 1..<levels {
            for row in 0..<interleave {
                for lane in 0..<lanes { accumulators[0][row][lane] += accumulators[level][row][lane] }
            }
        }
        return accumulators[0]
    }
}
