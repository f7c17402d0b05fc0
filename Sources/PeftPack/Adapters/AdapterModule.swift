/// One place in the base model an adapter changes, with the tensors that change it.
public struct AdapterModule: Sendable, Equatable {
    /// Module path in transformers naming from the model root as the source tool saw it, e.g.
    /// "model.layers.0.self_attn.q_proj"; for whole tensors, the tensor name itself.
    public var target: String
    /// What the module does there, with exactly the settings that needs.
    public var change: ModuleChange
    /// Role (TensorRole) → tensor name in the container.
    public var tensors: [String: String]

    public init(target: String, change: ModuleChange, tensors: [String: String] = [:]) {
        self.target = target
        self.change = change
        self.tensors = tensors
    }

    /// The conventional container name for one of this module's tensors.
    public static func tensorName(adapter: String, target: String, role: String) -> String {
        "\(adapter)/\(target)/\(role)"
    }
}

/// What a module does to the base model. Any adapter kind may carry whole tensors (PEFT's
/// `modules_to_save` copies and saved embedding layers); its other modules are of its own kind.
public enum ModuleChange: Sendable, Equatable {
    case lowRank(LowRankModule)
    case ia3(IA3Module)
    case bottleneck(BottleneckModule)
    /// Keys and values prepended at one layer.
    case prefix(layer: Int)
    case prompt
    case wholeTensor(WholeTensorModule)
    case loha(LoHaModule)
    case lokr(LoKrModule)
    case adalora(AdaLoRAModule)
    case vera(VeRAModule)
}

extension AdapterModule {
    public var lowRank: LowRankModule? {
        if case .lowRank(let settings) = change { return settings }
        return nil
    }

    public var ia3: IA3Module? {
        if case .ia3(let settings) = change { return settings }
        return nil
    }

    public var bottleneck: BottleneckModule? {
        if case .bottleneck(let settings) = change { return settings }
        return nil
    }

    public var wholeTensor: WholeTensorModule? {
        if case .wholeTensor(let settings) = change { return settings }
        return nil
    }

    public var isWholeTensor: Bool { wholeTensor != nil }

    /// The rows a whole-tensor module replaces, when it replaces rows.
    public var replacedRows: [Int]? {
        if case .rows(let rows)? = wholeTensor?.effect { return rows }
        return nil
    }

    /// The base tensor the module changes (spec §9.2's targeted tensors): the weight of a
    /// low-rank or IA3 target, the tensor a whole-tensor module names. Bottleneck, prefix and
    /// prompt modules add computation but change no tensor.
    public var targetedTensor: String? {
        switch change {
        case .lowRank, .ia3, .loha, .lokr, .adalora, .vera: target + ".weight"
        case .wholeTensor: target
        case .bottleneck, .prefix, .prompt: nil
        }
    }

    /// How the weight a low-rank or IA3 module changes is stored.
    public var layout: WeightLayout? {
        switch change {
        case .lowRank(let settings): settings.layout
        case .ia3(let settings): settings.layout
        case .loha(let settings): settings.layout
        case .lokr(let settings): settings.layout
        case .adalora(let settings): settings.layout
        case .vera(let settings): settings.layout
        default: nil
        }
    }

    /// The layer of a bottleneck or prefix module.
    public var layer: Int? {
        switch change {
        case .bottleneck(let settings): settings.layer
        case .prefix(let layer): layer
        default: nil
        }
    }

    /// The same module with another layout; modules that change no weight stay as they are.
    func withLayout(_ layout: WeightLayout) -> AdapterModule {
        var module = self
        switch change {
        case .lowRank(var settings):
            settings.layout = layout
            module.change = .lowRank(settings)
        case .ia3(var settings):
            settings.layout = layout
            module.change = .ia3(settings)
        case .loha(var settings):
            settings.layout = layout
            module.change = .loha(settings)
        case .lokr(var settings):
            settings.layout = layout
            module.change = .lokr(settings)
        case .adalora(var settings):
            settings.layout = layout
            module.change = .adalora(settings)
        case .vera(var settings):
            settings.layout = layout
            module.change = .vera(settings)
        default: break
        }
        return module
    }
}

/// The module object of spec/FORMAT.md §9.3–9.10: `target`, `tensors` and the kind's members.
/// A module with `mode` is a whole-tensor module whatever the adapter's kind.
extension AdapterModule: Encodable {
    enum CodingKeys: String, CodingKey {
        case target, layout, rank, scale, side, position, layer, mode, tensors, rows
        case sourceName = "source_name"
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(target, forKey: .target)
        try container.encode(tensors, forKey: .tensors)
        switch change {
        case .lowRank(let settings):
            try container.encode(settings.layout, forKey: .layout)
            try container.encode(settings.rank, forKey: .rank)
            try container.encode(settings.scale, forKey: .scale)
        case .ia3(let settings):
            try container.encode(settings.layout, forKey: .layout)
            try container.encode(settings.side, forKey: .side)
        case .loha(let settings):
            try container.encode(settings.layout, forKey: .layout)
            try container.encode(settings.rank, forKey: .rank)
            try container.encode(settings.scale, forKey: .scale)
        case .lokr(let settings):
            try container.encode(settings.layout, forKey: .layout)
            try container.encode(settings.rank, forKey: .rank)
            try container.encode(settings.scale, forKey: .scale)
        case .adalora(let settings):
            try container.encode(settings.layout, forKey: .layout)
            try container.encode(settings.rank, forKey: .rank)
            try container.encode(settings.scale, forKey: .scale)
        case .vera(let settings):
            try container.encode(settings.layout, forKey: .layout)
            try container.encode(settings.rank, forKey: .rank)
        case .bottleneck(let settings):
            try container.encode(settings.layer, forKey: .layer)
            try container.encode(settings.position, forKey: .position)
        case .prefix(let layer):
            try container.encode(layer, forKey: .layer)
        case .prompt:
            break
        case .wholeTensor(let settings):
            try container.encode(settings.mode, forKey: .mode)
            if case .rows(let rows) = settings.effect { try container.encode(rows, forKey: .rows) }
            try container.encodeIfPresent(settings.sourceName, forKey: .sourceName)
        }
    }

    /// Decodes a module of an adapter of `kind`; members the module's change does not use are
    /// ignored, as the spec asks of unknown members.
    init(from decoder: Decoder, kind: AdapterKind) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        target = try container.decode(String.self, forKey: .target)
        tensors = try container.decode([String: String].self, forKey: .tensors)
        if container.contains(.mode) {
            change = try Self.wholeTensor(container, target: target)
            return
        }
        switch kind {
        case .lora:
            change = .lowRank(LowRankModule(layout: try container.decode(WeightLayout.self, forKey: .layout),
                                            rank: try container.decode(Int.self, forKey: .rank),
                                            scale: try container.decode(Double.self, forKey: .scale)))
        case .ia3:
            change = .ia3(IA3Module(layout: try container.decode(WeightLayout.self, forKey: .layout),
                                    side: try container.decode(IA3Side.self, forKey: .side)))
        case .bottleneck:
            change = .bottleneck(BottleneckModule(layer: try container.decode(Int.self, forKey: .layer),
                                                  position: try container.decode(BottleneckPosition.self, forKey: .position)))
        case .prefix:
            change = .prefix(layer: try container.decode(Int.self, forKey: .layer))
        case .prompt:
            change = .prompt
        case .full:
            change = try Self.wholeTensor(container, target: target)
        case .loha:
            change = .loha(LoHaModule(layout: try container.decode(WeightLayout.self, forKey: .layout),
                                      rank: try container.decode(Int.self, forKey: .rank),
                                      scale: try container.decode(Double.self, forKey: .scale)))
        case .lokr:
            change = .lokr(LoKrModule(layout: try container.decode(WeightLayout.self, forKey: .layout),
                                      rank: try container.decode(Int.self, forKey: .rank),
                                      scale: try container.decode(Double.self, forKey: .scale)))
        case .adalora:
            change = .adalora(AdaLoRAModule(layout: try container.decode(WeightLayout.self, forKey: .layout),
                                            rank: try container.decode(Int.self, forKey: .rank),
                                            scale: try container.decode(Double.self, forKey: .scale)))
        case .vera:
            change = .vera(VeRAModule(layout: try container.decode(WeightLayout.self, forKey: .layout),
                                      rank: try container.decode(Int.self, forKey: .rank)))
        }
    }

    /// A module of kind `full` may omit `mode`, which then means replace.
    private static func wholeTensor(_ container: KeyedDecodingContainer<CodingKeys>, target: String) throws -> ModuleChange {
        let mode = try container.decodeIfPresent(String.self, forKey: .mode) ?? FullTensorMode.replace.rawValue
        let effect: WholeTensorModule.Effect
        switch FullTensorMode(rawValue: mode) {
        case .replace: effect = .replace
        case .delta: effect = .delta
        case .rows: effect = .rows(try container.decode([Int].self, forKey: .rows))
        case nil:
            throw DecodingError.dataCorruptedError(forKey: .mode, in: container,
                                                   debugDescription: "module \(target) has mode \"\(mode)\", which this reader does not know")
        }
        return .wholeTensor(WholeTensorModule(effect,
                                              sourceName: try container.decodeIfPresent(String.self, forKey: .sourceName)))
    }
}
