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
    /// Hadamard product of two low-rank products, ΔW = scale · (W1a·W1b) ⊙ (W2a·W2b) (PEFT LoHa).
    case loha
    /// Kronecker product of two (possibly low-rank) factors, ΔW = scale · W1 ⊗ W2 (PEFT LoKr).
    case lokr
    /// SVD-shaped low rank with pruned ranks, ΔW = scale · B·(A ⊙ E) (PEFT AdaLoRA).
    case adalora
    /// Shared frozen random projections scaled per module by two trained vectors (PEFT VeRA).
    case vera
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
    public static let hadamardW1A = "w1_a"
    public static let hadamardW1B = "w1_b"
    public static let hadamardW2A = "w2_a"
    public static let hadamardW2B = "w2_b"
    public static let kroneckerW1 = "w1"
    public static let kroneckerW1A = "w1_a"
    public static let kroneckerW1B = "w1_b"
    public static let kroneckerW2 = "w2"
    public static let kroneckerW2A = "w2_a"
    public static let kroneckerW2B = "w2_b"
    public static let singularValues = "E"
    public static let veraLambdaB = "lambda_b"
    public static let veraLambdaD = "lambda_d"
}
