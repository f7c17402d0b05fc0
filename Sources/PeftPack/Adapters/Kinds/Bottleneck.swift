/// A bottleneck MLP inserted after a sub-layer (AdapterHub Houlsby / Pfeiffer, spec/FORMAT.md §9.7).
public struct BottleneckModule: Sendable, Equatable {
    public var layer: Int
    public var position: BottleneckPosition

    public init(layer: Int, position: BottleneckPosition) {
        self.layer = layer
        self.position = position
    }
}

/// Where a bottleneck adapter sits inside a transformer layer.
public enum BottleneckPosition: String, Codable, Sendable {
    /// After the attention block's output projection (Houlsby's first adapter).
    case afterAttention = "after_attention"
    /// After the feed-forward block's output projection (Houlsby's second, Pfeiffer's only).
    case afterFeedForward = "after_feed_forward"
}
