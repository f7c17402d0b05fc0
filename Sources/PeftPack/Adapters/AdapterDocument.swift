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
    /// Whether the base's output head is its token embedding (EmbeddingTie); nil for encoders and
    /// packs recorded before format 1.2. Exporters to runtimes that tie differently need it.
    public var tieWordEmbeddings: Bool?
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
                numKeyValueHeads: Int? = nil, vocabSize: Int? = nil, tieWordEmbeddings: Bool? = nil, fingerprint: String? = nil,
                contentHashes: [String: String]? = nil, tensors: [String: BaseTensorRecord]? = nil) {
        self.architecture = architecture
        self.modelType = modelType
        self.nameOrPath = nameOrPath
        self.hiddenSize = hiddenSize
        self.numLayers = numLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads
        self.vocabSize = vocabSize
        self.tieWordEmbeddings = tieWordEmbeddings
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
        case tieWordEmbeddings = "tie_word_embeddings"
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

    enum CodingKeys: String, CodingKey {
        case name, kind, source, settings, modules
    }

    /// Modules decode knowing the adapter's kind, which decides what a module without `mode` is.
    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decode(String.self, forKey: .name)
        kind = try container.decode(AdapterKind.self, forKey: .kind)
        source = try container.decodeIfPresent(AdapterSource.self, forKey: .source)
        settings = try container.decode(AdapterSettings.self, forKey: .settings)
        var list = try container.nestedUnkeyedContainer(forKey: .modules)
        modules = []
        while !list.isAtEnd { modules.append(try AdapterModule(from: try list.superDecoder(), kind: kind)) }
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
