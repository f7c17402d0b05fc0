/// Everything peftpack knows about one transformers model family, in one value: where its tensors
/// live in a checkpoint, which modules adapters can change and how their weights are laid out,
/// which tensors are embeddings, heads, norms and buffers, how its config.json reads, whether its
/// head is tied by default, its llama.cpp names and where AdapterHub inserts adapters. Each family
/// is one file in this folder, registered in `ArchitectureRegistry`; the runtime, base
/// identification, extract, GGUF and AdapterHub read these values and know no family by name.
public struct Architecture: Sendable {
    /// config.json `model_type`, e.g. "llama", "gpt2".
    public let modelType: String
    /// The transformers classes of the family a saved `architectures[0]` names.
    public let classNames: [String]
    /// Prefix of the base model's tensors inside task classes ("model", "transformer", "bert").
    public let checkpointPrefix: String
    /// Path of layer `i` under the prefix is "\(layerPath).\(i)".
    public let layerPath: String
    /// The linear modules of every layer that adapters change.
    public let layerModules: [LayerModule]
    /// The token embedding under the prefix ("embed_tokens", "wte", "embeddings.word_embeddings").
    public let tokenEmbedding: String
    /// Learned position and token-type tables under the prefix.
    public let otherEmbeddings: [String]
    /// The output head of the causal LM class, outside the prefix; nil for encoders.
    public let outputHead: String?
    /// Norm modules: per layer (suffixes) and outside the layers (paths under the prefix).
    public let layerNorms: [String]
    public let modelNorms: [String]
    /// Name suffixes of non-parameter tensors some checkpoints carry and the model recomputes
    /// (position ids, rotary `inv_freq`, causal-mask buffers): never weights, never compared.
    public let buffers: [String]
    /// transformers' `tie_word_embeddings` default for the family's config class.
    public let tiesEmbeddingsByDefault: Bool
    /// The config class's defaults and field names.
    let configDefaults: ConfigDefaults
    public let llamaCpp: LlamaCppNaming?
    public let adapterHub: AdapterHubPoints
    /// Fills the family's fields of a config from its config.json.
    let readConfig: @Sendable (_ config: inout ModelConfig, _ fields: ConfigFields<ModelConfig.Key>) throws -> Void
    /// Loads the family's modules and returns the computation that runs them.
    let makeBody: @Sendable (_ config: ModelConfig, _ builder: inout ModelBuilder) throws -> any ModelBody

    init(modelType: String, classNames: [String], checkpointPrefix: String, layerPath: String,
         layerModules: [LayerModule], tokenEmbedding: String, otherEmbeddings: [String] = [],
         outputHead: String?, layerNorms: [String], modelNorms: [String], buffers: [String],
         tiesEmbeddingsByDefault: Bool, configDefaults: ConfigDefaults, llamaCpp: LlamaCppNaming?, adapterHub: AdapterHubPoints,
         readConfig: @escaping @Sendable (_ config: inout ModelConfig, _ fields: ConfigFields<ModelConfig.Key>) throws -> Void,
         makeBody: @escaping @Sendable (_ config: ModelConfig, _ builder: inout ModelBuilder) throws -> any ModelBody) {
        self.modelType = modelType
        self.classNames = classNames
        self.checkpointPrefix = checkpointPrefix
        self.layerPath = layerPath
        self.layerModules = layerModules
        self.tokenEmbedding = tokenEmbedding
        self.otherEmbeddings = otherEmbeddings
        self.outputHead = outputHead
        self.layerNorms = layerNorms
        self.modelNorms = modelNorms
        self.buffers = buffers
        self.tiesEmbeddingsByDefault = tiesEmbeddingsByDefault
        self.configDefaults = configDefaults
        self.llamaCpp = llamaCpp
        self.adapterHub = adapterHub
        self.readConfig = readConfig
        self.makeBody = makeBody
    }
}

/// One adaptable linear module of a layer.
public struct LayerModule: Sendable, Equatable {
    /// Path inside the layer, e.g. "self_attn.q_proj", "attn.c_attn".
    public let suffix: String
    /// How the module stores its weight: nn.Linear [out, in] or transformers Conv1D [in, out].
    public let layout: WeightLayout
    /// llama.cpp's tensor name inside `blk.N.` (convert_hf_to_gguf.py), nil when it has none.
    public let llamaCppName: String?
    /// Whose heads' rotary pairs llama.cpp's converter reorders in this module's output rows.
    public let rotaryRows: RotaryRows?

    public init(_ suffix: String, layout: WeightLayout = .linear, llamaCpp: String? = nil, rotaryRows: RotaryRows? = nil) {
        self.suffix = suffix
        self.layout = layout
        llamaCppName = llamaCpp
        self.rotaryRows = rotaryRows
    }
}

/// Which head count splits a projection's output rows into heads.
public enum RotaryRows: Sendable, Equatable {
    case queryHeads
    case keyValueHeads
}

/// How llama.cpp names a family's tensors (convert_hf_to_gguf.py and src/llama-arch.cpp).
public struct LlamaCppNaming: Sendable, Equatable {
    /// `general.architecture` of the family's GGUF files.
    public let architecture: String
    /// Whether the converter permutes q/k output rows so rotary pairs sit side by side
    /// (LlamaModel.permute); families whose llama.cpp graph uses NeoX-style rope do not.
    public let permutesRotaryRows: Bool
    /// The tensors outside the adaptable modules, llama.cpp name → path under the checkpoint
    /// prefix, and the per-layer norms, llama.cpp name (inside `blk.N.`) → path inside the layer;
    /// nil for a family whose GGUF models peftpack does not read.
    public var modelTensors: [String: String]? = nil
    public var layerNorms: [String: String]? = nil
    /// Whether the converter stores every `…norm.weight` as w + 1 (Gemma's (1 + w) RMSNorms).
    public var storesNormsPlusOne = false
    /// Family-specific metadata keys (under `<architecture>.`) → the config.json field each is.
    public var configKeys: [String: String] = [:]
    /// The query scale llama.cpp fixes for the family instead of reading it from the file.
    public var queryScale: LlamaCppQueryScale? = nil
    /// Whether llama.cpp runs sliding layers only when the file gives a window (Gemma 3: without
    /// `attention.sliding_window`, or with 0, every layer attends to everything).
    public var slidesOnlyWithWindowKey = false
    /// Whether the graph rotates only `rope.dimension_count` of each head's dimensions (Phi-3's
    /// partial_rotary_factor); elsewhere a smaller count is refused.
    public var rotatesPartialHeads = false
}

/// Gemma 2/3's query_pre_attn_scalar, which the converter does not store: llama.cpp scales
/// queries by 1/√head_dim, or by 1/√(hidden / heads) in the model of `hiddenPerHeadLayerCount`
/// layers (the 27B, whose query_pre_attn_scalar is that quotient).
public struct LlamaCppQueryScale: Sendable, Equatable {
    public let hiddenPerHeadLayerCount: Int

    /// query_pre_attn_scalar as llama.cpp's `f_attention_scale` implies it (integer division).
    func queryPreAttentionScalar(layers: Int, hidden: Int, heads: Int, headDim: Int) -> Int {
        layers == hiddenPerHeadLayerCount ? hidden / heads : headDim
    }
}

extension LlamaCppNaming {
    /// llama.cpp's llama graph (gguf-py's TensorNameMap for MODEL_ARCH.LLAMA): its GGUF models
    /// read as bases.
    static let llama = LlamaCppNaming(
        architecture: "llama", permutesRotaryRows: true,
        modelTensors: ["token_embd": "embed_tokens", "output_norm": "norm"],
        layerNorms: ["attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"])

    /// Llama's tensors under another llama.cpp graph whose converter writes them alike (Qwen 2,
    /// Gemma), rope rows not permuted.
    static func llamaTensors(architecture: String) -> LlamaCppNaming {
        LlamaCppNaming(architecture: architecture, permutesRotaryRows: false,
                       modelTensors: llama.modelTensors, layerNorms: llama.layerNorms)
    }
}

/// Where AdapterHub's bottleneck adapters sit in a layer: the sub-layer paths (inside a layer) of
/// the adapters after attention and after the feed-forward block.
public struct AdapterHubPoints: Sendable, Equatable {
    public let afterAttention: [String]
    public let afterFeedForward: [String]

    public static let none = AdapterHubPoints(afterAttention: [], afterFeedForward: [])
}

/// A family's computation over loaded modules: the forward pass from token ids to the output.
protocol ModelBody: Sendable {
    func run(_ pass: ForwardPass, inputIds: [[Int]]) -> FloatTensor
    /// The `*ForSequenceClassification` head, when the checkpoint is one.
    var classifier: SequenceClassificationHead? { get }
    /// The token embedding and the output head (module indices) of a causal LM.
    var embeddingAndHead: (embedding: Int, head: Int)? { get }
    /// Matrices of the feed-forward block (2, or 3 when gated), for FLOP estimates.
    var feedForwardMatrices: Int { get }
    /// Whether positions come from a learned table that ends at max_position_embeddings.
    var hasLearnedPositions: Bool { get }
}

extension Architecture: Equatable {
    /// One value per `model_type`.
    public static func == (lhs: Architecture, rhs: Architecture) -> Bool { lhs.modelType == rhs.modelType }
}

extension Architecture {
    /// The module path of layer `layer`'s module `suffix`, under the prefix.
    public func layerModulePath(_ layer: Int, _ suffix: String) -> String {
        "\(layerPath).\(layer).\(suffix)"
    }

    /// The layer index and in-layer path of a module path with or without the prefix (and PEFT's
    /// `base_model.model.`), or nil when it is not inside a layer.
    public func layerPosition(of path: String) -> (layer: Int, suffix: String)? {
        var name = Substring(path)
        for prefix in ["base_model.model.", checkpointPrefix + "."] where name.hasPrefix(prefix) { name = name.dropFirst(prefix.count) }
        guard name.hasPrefix(layerPath + ".") else { return nil }
        let rest = name.dropFirst(layerPath.count + 1)
        guard let dot = rest.firstIndex(of: "."), let layer = Int(rest[..<dot]) else { return nil }
        return (layer, String(rest[rest.index(after: dot)...]))
    }

    /// The layer module a path names, if any.
    public func layerModule(at path: String) -> LayerModule? {
        guard let (_, suffix) = layerPosition(of: path) else { return nil }
        return layerModules.first { $0.suffix == suffix }
    }

    /// The checkpoint name of the token embedding's weight.
    public var tokenEmbeddingWeight: String { "\(checkpointPrefix).\(tokenEmbedding).weight" }

    /// Whether a checkpoint tensor name is a buffer the model recomputes.
    public func isBuffer(_ name: String) -> Bool {
        buffers.contains { name.hasSuffix($0) }
    }
}
