/// LoRA / rsLoRA / DoRA: ΔW = scale · B·A on a linear, Conv1D or embedding weight
/// (spec/FORMAT.md §9.5); DoRA when the module carries a magnitude vector.
public struct LowRankModule: Sendable, Equatable {
    public var layout: WeightLayout
    /// r: rows of A.
    public var rank: Int
    /// The factor in ΔW = scale · B·A, already resolved from alpha/r, alpha/√r or patterns.
    public var scale: Double

    public init(layout: WeightLayout, rank: Int, scale: Double) {
        self.layout = layout
        self.rank = rank
        self.scale = scale
    }
}
