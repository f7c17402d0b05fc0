/// The model families peftpack knows. Adding a family: its file in this folder and one line here.
public enum ArchitectureRegistry {
    public static let all: [Architecture] = [
        .bert,
        .gpt2,
        .llama,
        .mistral,
        .qwen2,
        .gemma,
        .openAIGPT,
        .qwen3,
        .gemma2,
        .gemma3,
        .phi3,
        .ministral,
    ]

    /// The family of a config.json `model_type`.
    public static func architecture(modelType: String) -> Architecture? {
        all.first { $0.modelType == modelType }
    }

    /// The family of a transformers class name (`architectures[0]`).
    public static func architecture(className: String) -> Architecture? {
        all.first { $0.classNames.contains(className) }
    }

    /// The family a config's `model_type` or, failing that, its class names.
    public static func architecture(modelType: String?, className: String?) -> Architecture? {
        modelType.flatMap { architecture(modelType: $0) } ?? className.flatMap { architecture(className: $0) }
    }
}
