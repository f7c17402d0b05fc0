/// IA3: learned per-feature scaling of one side of a weight (spec/FORMAT.md §9.6).
public struct IA3Module: Sendable, Equatable {
    public var layout: WeightLayout
    public var side: IA3Side

    public init(layout: WeightLayout, side: IA3Side) {
        self.layout = layout
        self.side = side
    }
}

/// Which side of the weight an IA3 vector scales.
public enum IA3Side: String, Codable, Sendable {
    /// Scales the input features: W' = W · diag(v) (PEFT's feed-forward modules).
    case input
    /// Scales the output features: W' = diag(v) · W.
    case output
}
