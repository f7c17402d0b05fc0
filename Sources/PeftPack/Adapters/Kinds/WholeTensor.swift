/// A whole tensor that replaces a base tensor, is added to it, or replaces some of its rows
/// (spec/FORMAT.md §9.10). Adapters of every kind carry these.
public struct WholeTensorModule: Sendable, Equatable {
    public enum Effect: Sendable, Equatable {
        case replace
        case delta
        /// Rows of the base tensor (an embedding or output head, one row per token) that become
        /// the stored tensor's rows, in order: PEFT's `trainable_token_indices`.
        case rows([Int])
    }

    public var effect: Effect
    /// The tensor's exact name in the source file (e.g. PEFT's `…embed_tokens.base_layer.weight`),
    /// so an exporter restores it unchanged.
    public var sourceName: String?

    public init(_ effect: Effect, sourceName: String? = nil) {
        self.effect = effect
        self.sourceName = sourceName
    }

    /// The serialized name of the effect.
    public var mode: FullTensorMode {
        switch effect {
        case .replace: .replace
        case .delta: .delta
        case .rows: .rows
        }
    }
}

/// The serialized `mode` of a whole-tensor module.
public enum FullTensorMode: String, Codable, Sendable {
    case replace
    case delta
    case rows
}
