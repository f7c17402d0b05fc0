import Foundation

/// The arithmetic of merging, on a tensor in its stored layout, in fp64: the factors (fp32 or
/// narrower) are exact in fp64, so W + s·B·A is computed to ~2⁻⁵³ and the caller's single
/// rounding to the output dtype is the correctly rounded exact merge.
enum MergeArithmetic {
    static func add(_ target: inout [Double], _ values: [Double], scale: Double) {
        for index in target.indices { target[index] += scale * values[index] }
    }
}
