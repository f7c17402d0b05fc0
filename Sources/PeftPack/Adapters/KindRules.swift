/// The tool formats an adapter leaves peftpack in (`peftpack export --format`).
public enum AdapterFileFormat: String, CaseIterable, Sendable {
    case peft
    case adapterhub
    case gguf
    case mlx
}

/// What one adapter kind is and may do, as data: the operations and exporters ask this table
/// instead of each restating it. Each kind's entry sits in its own file under Adapters/Kinds/.
public struct KindRules: Sendable {
    /// Tensor roles each of the kind's modules carries, and those it may carry.
    public let requiredRoles: [String]
    public let optionalRoles: [String]
    /// Whether `merge` folds it into the base weights.
    public let mergeable: Bool
    /// What it adds to the model instead of changing weights, for kinds that cannot be merged.
    public let addedComputation: String?
    /// Whether `stack` combines adapters of the kind into one.
    public let stackable: Bool
    /// The formats it exports to, the first being the one `export` picks when none is given.
    public let exports: [AdapterFileFormat]

    /// Every role a module of the kind may carry.
    public var roles: Set<String> { Set(requiredRoles + optionalRoles) }
}

extension AdapterKind {
    public var rules: KindRules {
        switch self {
        case .lora: LowRankModule.rules
        case .ia3: IA3Module.rules
        case .bottleneck: BottleneckModule.rules
        case .prefix: PrefixTuning.rules
        case .prompt: PromptTuning.rules
        case .full: WholeTensorModule.rules
        case .loha: LoHaModule.rules
        case .lokr: LoKrModule.rules
        case .adalora: AdaLoRAModule.rules
        case .vera: VeRAModule.rules
        }
    }

    public func exports(to format: AdapterFileFormat) -> Bool { rules.exports.contains(format) }
}

extension ModuleChange {
    /// The rules of the kind of module this is (a whole tensor's, in an adapter of any kind).
    public var rules: KindRules {
        switch self {
        case .lowRank: LowRankModule.rules
        case .ia3: IA3Module.rules
        case .bottleneck: BottleneckModule.rules
        case .prefix: PrefixTuning.rules
        case .prompt: PromptTuning.rules
        case .wholeTensor: WholeTensorModule.rules
        case .loha: LoHaModule.rules
        case .lokr: LoKrModule.rules
        case .adalora: AdaLoRAModule.rules
        case .vera: VeRAModule.rules
        }
    }
}
