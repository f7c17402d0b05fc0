/// The metadata document a pack carries: what base it belongs to, who made it, and every adapter
/// with its modules. Tensor data lives in the container's tensor index; modules refer to tensors
/// by name. Field names are the serialized snake_case names of spec/FORMAT.md.
public struct PackDocument: Codable, Sendable, Equatable {
    public var creator: Creator
    public var base: BaseModelIdentity?
    public var userMetadata: [String: String]
    public var adapters: [Adapter]

    public init(creator: Creator = .current, base: BaseModelIdentity? = nil,
                userMetadata: [String: String] = [:], adapters: [Adapter] = []) {
        self.creator = creator
        self.base = base
        self.userMetadata = userMetadata
        self.adapters = adapters
    }

    enum CodingKeys: String, CodingKey {
        case creator, base, adapters
        case userMetadata = "user_metadata"
    }

    public func adapter(named name: String) -> Adapter? {
        adapters.first { $0.name == name }
    }
}

public struct Creator: Codable, Sendable, Equatable {
    public var tool: String
    public var version: String

    public static let current = Creator(tool: "peftpack", version: PeftPackVersion.string)
}

/// The base model an adapter was trained on, as far as the adapter's own files tell, completed
/// from the base checkpoint when one is given at import.
public struct BaseModelIdentity: Codable, Sendable, Equatable {
    /// `architectures[0]` of the base config.json (e.g. "LlamaForCausalLM"), when known.
    public var architecture: String?
    /// `model_type` (e.g. "llama", "bert", "gpt2").
    public var modelType: String?
    /// Name or path the adapter's config recorded; informational only.
    public var nameOrPath: String?
    public var hiddenSize: Int?
    public var numLayers: Int?
    public var numAttentionHeads: Int?
    public var numKeyValueHeads: Int?
    public var vocabSize: Int?
    /// XXH3-64 (hex) over the canonical listing of the targeted base tensors' names, dtypes and
    /// shapes (spec: "Base fingerprint"); set when the base was given at import. It covers every
    /// adapter of the pack at once, so it cannot check a subset: `tensors` can.
    public var fingerprint: String?
    /// XXH3-64 (hex) of each targeted base tensor's raw bytes; set when the base was given.
    public var contentHashes: [String: String]?
    /// Dtype and shape of each targeted base tensor (format 1.1); set when the base was given.
    public var tensors: [String: BaseTensorRecord]?

    public init(architecture: String? = nil, modelType: String? = nil, nameOrPath: String? = nil,
                hiddenSize: Int? = nil, numLayers: Int? = nil, numAttentionHeads: Int? = nil,
                numKeyValueHeads: Int? = nil, vocabSize: Int? = nil, fingerprint: String? = nil,
                contentHashes: [String: String]? = nil, tensors: [String: BaseTensorRecord]? = nil) {
        self.architecture = architecture
        self.modelType = modelType
        self.nameOrPath = nameOrPath
        self.hiddenSize = hiddenSize
        self.numLayers = numLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads
        self.vocabSize = vocabSize
        self.fingerprint = fingerprint
        self.contentHashes = contentHashes
        self.tensors = tensors
    }

    enum CodingKeys: String, CodingKey {
        case architecture, fingerprint, tensors
        case modelType = "model_type"
        case nameOrPath = "name_or_path"
        case hiddenSize = "hidden_size"
        case numLayers = "num_layers"
        case numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads"
        case vocabSize = "vocab_size"
        case contentHashes = "content_hashes"
    }
}

/// One base tensor as the base an adapter was made for stores it.
public struct BaseTensorRecord: Codable, Sendable, Equatable {
    /// The safetensors dtype name ("F32", "BF16", …).
    public var dtype: String
    public var shape: [Int]

    public init(dtype: String, shape: [Int]) {
        self.dtype = dtype
        self.shape = shape
    }
}

/// Where an adapter came from: the tool's format name and its original config file, verbatim.
public struct AdapterSource: Codable, Sendable, Equatable {
    /// "peft", "adapterhub", "gguf", "peftpack" (made by extract/stack).
    public var format: String
    /// The source config file's exact text (adapter_config.json), so export can reproduce it.
    public var configText: String?

    public init(format: String, configText: String? = nil) {
        self.format = format
        self.configText = configText
    }

    enum CodingKeys: String, CodingKey {
        case format
        case configText = "config_text"
    }
}

/// One named adapter: a kind, kind-wide settings, and its modules.
public struct Adapter: Codable, Sendable, Equatable {
    public var name: String
    public var kind: AdapterKind
    public var source: AdapterSource?
    public var settings: AdapterSettings
    public var modules: [AdapterModule]

    public init(name: String, kind: AdapterKind, source: AdapterSource? = nil,
                settings: AdapterSettings = AdapterSettings(), modules: [AdapterModule] = []) {
        self.name = name
        self.kind = kind
        self.source = source
        self.settings = settings
        self.modules = modules
    }
}

/// Kind-wide settings; each kind uses the fields listed in the spec and leaves the rest nil.
public struct AdapterSettings: Codable, Sendable, Equatable {
    /// prefix, prompt: number of virtual tokens.
    public var numVirtualTokens: Int?
    /// prefix: layers that receive keys/values; heads and head size of each key/value tensor.
    public var numLayers: Int?
    public var numKeyValueHeads: Int?
    public var headDim: Int?
    /// prompt: embedding width of each virtual token.
    public var tokenDim: Int?
    /// bottleneck: "houlsby" (after attention and feed-forward) or "pfeiffer" (feed-forward only).
    public var bottleneckArchitecture: String?
    /// bottleneck: activation between down and up projection ("relu", "swish", "gelu", "tanh", …).
    public var nonLinearity: String?
    public var reductionFactor: Double?
    /// bottleneck: AdapterHub placement flags, with AdapterHub's meaning.
    public var originalLnBefore: Bool?
    public var originalLnAfter: Bool?
    public var residualBeforeLn: Bool?
    public var scaling: Double?
    /// lora: PEFT's key suffix for DoRA magnitudes when it is not the current
    /// `.lora_magnitude_vector` (older PEFT wrote `.lora_magnitude_vector.weight`).
    public var magnitudeKeySuffix: String?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case numVirtualTokens = "num_virtual_tokens"
        case numLayers = "num_layers"
        case numKeyValueHeads = "num_key_value_heads"
        case headDim = "head_dim"
        case tokenDim = "token_dim"
        case bottleneckArchitecture = "bottleneck_architecture"
        case nonLinearity = "non_linearity"
        case reductionFactor = "reduction_factor"
        case originalLnBefore = "original_ln_before"
        case originalLnAfter = "original_ln_after"
        case residualBeforeLn = "residual_before_ln"
        case scaling
        case magnitudeKeySuffix = "magnitude_key_suffix"
    }
}

/// One place in the base model an adapter changes, with the tensors that change it.
public struct AdapterModule: Codable, Sendable, Equatable {
    /// Module path in transformers naming from the model root as the source tool saw it, e.g.
    /// "model.layers.0.self_attn.q_proj"; for full tensors, the tensor name itself.
    public var target: String
    /// lora, ia3, full: how the base weight is laid out.
    public var layout: WeightLayout?
    /// lora: rank r (rows of A).
    public var rank: Int?
    /// lora: the factor in ΔW = scale · B·A, already resolved from alpha/r, alpha/√r or patterns.
    public var scale: Double?
    /// ia3: which side the vector scales.
    public var side: IA3Side?
    /// bottleneck: where in the layer; prefix and bottleneck: which layer.
    public var position: BottleneckPosition?
    public var layer: Int?
    /// full: replace, add, or replace rows.
    public var mode: FullTensorMode?
    /// full, mode rows: the base tensor's rows (token ids) the stored rows replace, in order.
    public var rows: [Int]?
    /// Role (TensorRole) → tensor name in the container.
    public var tensors: [String: String]
    /// full modules: the tensor's exact name in the source file (e.g. PEFT's
    /// `…embed_tokens.base_layer.weight`), so an exporter restores it unchanged.
    public var sourceName: String?

    public init(target: String, layout: WeightLayout? = nil, rank: Int? = nil, scale: Double? = nil,
                side: IA3Side? = nil, position: BottleneckPosition? = nil, layer: Int? = nil,
                mode: FullTensorMode? = nil, tensors: [String: String] = [:], sourceName: String? = nil,
                rows: [Int]? = nil) {
        self.target = target
        self.layout = layout
        self.rank = rank
        self.scale = scale
        self.side = side
        self.position = position
        self.layer = layer
        self.mode = mode
        self.tensors = tensors
        self.sourceName = sourceName
        self.rows = rows
    }

    enum CodingKeys: String, CodingKey {
        case target, layout, rank, scale, side, position, layer, mode, tensors, rows
        case sourceName = "source_name"
    }

    /// The conventional container name for one of this module's tensors.
    public static func tensorName(adapter: String, target: String, role: String) -> String {
        "\(adapter)/\(target)/\(role)"
    }
}
