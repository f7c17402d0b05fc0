/// The fp32 sum torch 2.x computes on an AVX2 CPU for a contiguous 1-D float tensor of at most
/// 32,768 elements (`aten/src/ATen/native/cpu/SumKernel.cpp`, `vectorized_inner_sum` → `row_sum` →
/// `multi_row_sum`): 8-lane vectors, four interleaved accumulators, each a 4-level cascade whose
/// levels fold every 2^max(4, ⌈log2 n⌉/4) vectors; then the scalar tail and the eight lanes in order.
/// bitsandbytes' double quantization subtracts `absmax.mean()` (this sum ÷ n in fp32) from every
/// absmax, so the offset, and through it every nested code, depends on this exact order: a plain or
/// fp64 sum rounds differently for about half the inputs (measured on 200 random vectors; this
/// order matched torch on all of them). Beyond 32,768 elements torch splits the sum across threads
/// (their count is the machine's), which this does not model.
enum TorchCPUSum {
    static let lanes = 8
    static let interleave = 4
    static let levels = 4

    static func mean(_ values: [Float]) -> Float {
        sum(values) / Float(values.count)
    }

    static func sum(_ values: [Float]) -> Float {
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
