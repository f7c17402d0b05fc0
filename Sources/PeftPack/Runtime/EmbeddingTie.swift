/// Whether a causal LM's output head is its token embedding (`tie_word_embeddings`), and the
/// checkpoint names of the pair. The one place merge, extract, import and the runtime learn it.
///
/// transformers 5 decides tying from config.json alone: `tie_word_embeddings` when present, else
/// the config class's default (GPT-2, BERT, Gemma: true; Llama, Mistral, Qwen2: false; Qwen2.5 and
/// Llama-3.2 small models set true explicitly). A tied checkpoint has no `lm_head.weight`; when one
/// is present anyway, loading ties over it, so its stored value never counts.
public struct EmbeddingTie: Sendable, Equatable {
    /// The embedding's checkpoint name, e.g. "model.embed_tokens.weight" or "transformer.wte.weight".
    public var embedding: String
    /// The head's checkpoint name as an untied checkpoint of the same model stores it.
    public var head: String

    public static let headName = "lm_head.weight"
    static let embeddingNames = ["model.embed_tokens.weight", "transformer.wte.weight", "embed_tokens.weight", "wte.weight"]

    /// Whether transformers ties: config.json's `tie_word_embeddings` when given, else the config
    /// class's default.
    static func isTied(configured: Bool?, modelType: String?) -> Bool {
        if let configured { return configured }
        switch modelType {
        case "gpt2", "bert", "gemma", "gemma2", "gemma3_text": return true
        default: return false
        }
    }

    /// The tie of a causal LM checkpoint, or nil when its head is a tensor of its own (or it has no
    /// head: encoders and task heads other than lm_head are not tied this way).
    public init?(config: StrictJSON?, tensorNames: Set<String>) {
        let modelType = config?["model_type"]?.stringValue
        var configured: Bool?
        if case .bool(let value)? = config?["tie_word_embeddings"] { configured = value }
        guard Self.isTied(configured: configured, modelType: modelType), modelType != "bert", let embedding = Self.embeddingNames.first(where: tensorNames.contains) else { return nil }
        self.embedding = embedding
        head = Self.headName
    }

    /// The tensor whose bytes a name stands for: the embedding for the tied head.
    public func storedName(_ name: String) -> String {
        name == head ? embedding : name
    }
}
