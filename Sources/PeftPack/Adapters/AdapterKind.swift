/// The kinds of parameter-efficient adapters a pack holds. Each kind fixes which tensor roles its
/// modules carry and how they change the base model (spec/FORMAT.md, "Adapter document").
public enum AdapterKind: String, Codable, Sendable, CaseIterable {
    /// Low-rank update ΔW = scale · B·A of a linear, Conv1D or embedding weight; DoRA when modules
    /// carry a magnitude vector.
    case lora
    /// Learned per-feature scaling of a weight's input or output side.
    case ia3
    /// Bottleneck MLPs inserted after sub-layers (AdapterHub Houlsby / Pfeiffer).
    case bottleneck
    /// Extra attention keys and values prepended at every layer (prefix tuning, P-tuning v2).
    case prefix
    /// Virtual token embeddings prepended to the input (prompt tuning, P-tuning).
    case prompt
    /// Whole tensors that replace base tensors, or dense deltas added to them.
    case full
}

/// How a weight is laid out in the base checkpoint relative to the math `y = W·x`, W: [out, in].
public enum WeightLayout: String, Codable, Sendable {
    /// nn.Linear: stored [out, in].
    case linear
    /// GPT-2 Conv1D (PEFT `fan_in_fan_out`): stored [in, out], so the stored delta is (B·A)ᵀ.
    case conv1d
    /// nn.Embedding: stored [num_embeddings, dim]; `in` is the vocabulary (one-hot input), so the
    /// stored delta is (B·A)ᵀ.
    case embedding
}

/// Which side of the weight an IA3 vector scales.
public enum IA3Side: String, Codable, Sendable {
    /// Scales the input features: W' = W · diag(v) (PEFT's feed-forward modules).
    case input
    /// Scales the output features: W' = diag(v) · W.
    case output
}

/// Whether a full tensor replaces the base tensor, is added to it, or replaces some of its rows.
public enum FullTensorMode: String, Codable, Sendable {
    case replace
    case delta
    /// Rows `AdapterModule.rows` of the base tensor (an embedding or output head, one row per
    /// token) become the stored tensor's rows, in order: PEFT's `trainable_token_indices`.
    case rows
}

/// Where a bottleneck adapter sits inside a transformer layer.
public enum BottleneckPosition: String, Codable, Sendable {
    /// After the attention block's output projection (Houlsby's first adapter).
    case afterAttention = "after_attention"
    /// After the feed-forward block's output projection (Houlsby's second, Pfeiffer's only).
    case afterFeedForward = "after_feed_forward"
}

/// Tensor roles, named once so writers and readers agree.
public enum TensorRole {
    public static let loraA = "A"
    public static let loraB = "B"
    public static let loraBBias = "B_bias"
    public static let magnitude = "magnitude"
    public static let targetBias = "bias"
    public static let ia3Vector = "vector"
    public static let downWeight = "down.weight"
    public static let downBias = "down.bias"
    public static let upWeight = "up.weight"
    public static let upBias = "up.bias"
    public static let prefixKeys = "keys"
    public static let prefixValues = "values"
    public static let promptEmbeddings = "embeddings"
    public static let fullValue = "value"
}
