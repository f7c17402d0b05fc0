import Foundation

/// mlx-lm's adapter folder as `mlx_lm.lora` saves it and `mlx_lm.utils.load(…, adapter_path=)`
/// reads it (mlx-lm 0.32: lora.py, tuner/utils.py load_adapters / linear_to_lora_layers,
/// tuner/lora.py LoRALinear, tuner/dora.py DoRALinear):
/// - `adapter_config.json`: the training arguments; loading reads `fine_tune_type` (lora | dora |
///   full, default lora), `num_layers` (the adapter sits in the LAST num_layers of `model.layers`)
///   and `lora_parameters` {`rank`, `scale`, `dropout`, optional `keys`: module paths inside a
///   layer, default every linear and embedding there}.
/// - `adapters.safetensors`: `<module>.lora_a` [in, r] and `.lora_b` [r, out] under the model's
///   own parameter names (`model.layers.N.self_attn.q_proj`), DoRA's `.m` [out]; `full` holds
///   the trained weights themselves.
/// LoRALinear computes y = W x + scale · (x·A)·B, so in PEFT's orientation ΔW = scale · Bᵀ·Aᵀ
/// with one rank and one scale for the whole adapter. DoRALinear multiplies W x + scale·(x·A)·B
/// by m / ‖W + scale·Bᵀ·Aᵀ‖ per output row (norm over the input features, no eps), then adds the
/// bias: PEFT's DoRA exactly.
public enum MLXAdapterFormat {
    public static let configFile = "adapter_config.json"
    public static let weightsFile = "adapters.safetensors"
    /// mx.save_safetensors's header metadata.
    public static let weightsMetadata = ["format": "mlx"]
    public static let loraA = ".lora_a"
    public static let loraB = ".lora_b"
    public static let magnitude = ".m"

    public enum FineTuneType: String {
        case lora, dora, full
    }

    /// The model types whose mlx-lm model names its layers' modules as transformers does
    /// (`model.layers.N.<suffix>`), each checked by tests/python/check_mlx_adapters.py.
    public static let modelTypes: Set<String> = ["llama", "mistral", "qwen2", "qwen3"]

    /// Whether a module path names a registered family's token embedding (`model.embed_tokens`),
    /// which mlx-lm adapts with a LoRAEmbedding: what a saved module is when no base says.
    static func isTokenEmbedding(_ module: String) -> Bool {
        ArchitectureRegistry.all.contains { "\($0.checkpointPrefix).\($0.tokenEmbedding)" == module }
    }

    /// Whether a folder's files are an mlx-lm adapter: its config has `fine_tune_type` or
    /// `lora_parameters`, keys PEFT and AdapterHub configs never have.
    static func isAdapterConfig(_ json: StrictJSON) -> Bool {
        json["fine_tune_type"] != nil || json["lora_parameters"] != nil
    }
}
