/// Whether a causal LM's output head is its token embedding (`tie_word_embeddings`), and the
/// checkpoint names of the pair. The one place merge, extract, import and the runtime learn it.
///
/// transformers 5 decides tying from config.json alone: `tie_word_embeddings` when present, else
/// the config class's default (`Architecture.tiesEmbeddingsByDefault`: GPT-2, Gemma true; Llama,
/// Mistral, Qwen2 false; Qwen2.5 and Llama-3.2 small models set true explicitly). A tied checkpoint
/// has no `lm_head.weight`; when one is present anyway, loading ties over it, so its stored value
/// never counts. Encoders have no output head to tie.
public struct EmbeddingTie: Sendable, Equatable {
    /// The embedding's checkpoint name, e.g. "model.embed_tokens.weight" or "transformer.wte.weight".
    public var embedding: String
    /// The head's checkpoint name as an untied checkpoint of the same model stores it.
    public var head: String

    /// Whether transformers ties a checkpoint with this config.json, and the names of the pair:
    /// `tie_word_embeddings` when given, else the family's default (`Architecture`). For a family
    /// outside the registry only an explicit `tie_word_embeddings: true` ties, with the head
    /// named lm_head and the embedding under any registered family's name.
    public init?(config: StrictJSON?, tensorNames: Set<String>) {
        let family = ArchitectureRegistry.architecture(modelType: config?["model_type"]?.stringValue,
                                                       className: config?["architectures"]?.arrayValue?.first?.stringValue)
        var configured: Bool?
        if case .bool(let value)? = config?["tie_word_embeddings"] { configured = value }
        let families = family.map { [$0] } ?? ArchitectureRegistry.all
        guard configured ?? family?.tiesEmbeddingsByDefault ?? false,
              let headModule = family.map({ $0.outputHead }) ?? "lm_head",
              let embedding = families.flatMap({ [$0.tokenEmbeddingWeight, "\($0.tokenEmbedding).weight"] }).first(where: tensorNames.contains)
        else { return nil }
        self.embedding = embedding
        head = headModule + ".weight"
    }

    /// The tensor whose bytes a name stands for: the embedding for the tied head.
    public func storedName(_ name: String) -> String {
        name == head ? embedding : name
    }
}
