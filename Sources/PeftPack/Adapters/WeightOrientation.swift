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

/// The orientation rule, the one place that says how the math weight W [out, in] of `y = W·x`
/// lands on the stored tensor: nn.Linear stores it as is; Conv1D and nn.Embedding store Wᵀ, so
/// a low-rank ΔW = B·A is added transposed and IA3's input side scales stored rows, not columns.
public struct WeightOrientation: Sendable, Equatable {
    public var out: Int
    public var inputs: Int
    /// Stored [in, out] rather than [out, in].
    public var transposed: Bool

    public init(out: Int, inputs: Int, layout: WeightLayout) {
        self.out = out
        self.inputs = inputs
        transposed = layout.storesTransposed
    }

    /// The orientation of a stored 2-D weight.
    public init(storedShape: [Int], layout: WeightLayout) {
        transposed = layout.storesTransposed
        out = transposed ? storedShape[1] : storedShape[0]
        inputs = transposed ? storedShape[0] : storedShape[1]
    }

    /// The shape the base stores the weight in.
    public var storedShape: [Int] { [storedRows, storedColumns] }
    public var storedRows: Int { transposed ? inputs : out }
    public var storedColumns: Int { transposed ? out : inputs }

    /// The stored element index of W[o, i].
    public func offset(_ o: Int, _ i: Int) -> Int { transposed ? i * out + o : o * inputs + i }
}

extension WeightLayout {
    /// Whether the stored tensor is Wᵀ (Conv1D [in, out], embedding [vocab, dim]).
    public var storesTransposed: Bool { self != .linear }
}
