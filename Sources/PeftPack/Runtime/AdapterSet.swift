/// Adapters attached to one model at run time, unmerged: validated against the model once, their
/// tensors converted to fp32 and everything that depends only on weights (DoRA norms, replaced
/// tensors) computed up front. Adapters apply in the order given; where several touch the same
/// place they compose: low-rank updates add up, IA3 vectors multiply, bottleneck blocks stack,
/// prefixes and prompts concatenate, later full tensors replace earlier ones.
///
/// Tensors by kind (fp32 after conversion; any float dtype is accepted):
/// - lora: A [r, in], B [out, r] (embedding: A [r, vocab], B [dim, r]); optional B_bias [out],
///   magnitude [out] (DoRA; embedding: [dim]) and bias [out], which replaces the target's bias.
/// - ia3: vector with as many elements as the side it scales ([n], [n, 1] or [1, n]).
/// - whole tensors (any kind): value with the target parameter's shape, replacing it or added to
///   it; rows: value [rows, width] replacing the listed rows of the target.
/// - bottleneck: down.weight [m, hidden], up.weight [hidden, m], optional down.bias, up.bias.
/// - prefix: one module per layer (`layer` set) with keys and values [tokens, kv_heads, head_dim]
///   or [tokens, kv_heads · head_dim], unrotated, as PEFT places them in the KV cache.
/// - prompt: embeddings [tokens, hidden], prepended to the input embeddings.
public struct AdapterSet: Sendable {
    let model: TransformerModel
    public let adapterNames: [String]

    var overrides: [ParameterID: [Float]] = [:]
    var linear: [Int: LinearAdapters] = [:]
    var embedding: [Int: [LowRankUpdate]] = [:]
    var bottlenecks: [BottleneckSite: [BottleneckBlock]] = [:]
    /// Per layer: prefix keys and values [prefixLength, keyValueHeads · headDim].
    var prefixKeys: [TokenMatrix] = []
    var prefixValues: [TokenMatrix] = []
    /// Virtual token embeddings [promptLength, hidden].
    var prompt: TokenMatrix?

    var prefixLength: Int { prefixKeys.first?.rows ?? 0 }
    var promptLength: Int { prompt?.rows ?? 0 }

    /// - Parameter tensor: returns a pack tensor by the name an `AdapterModule` gives for a role.
    public init(adapters: [Adapter], model: TransformerModel, tensor: (String) throws -> HostTensor) throws {
        self.model = model
        adapterNames = adapters.map(\.name)
        try withoutActuallyEscaping(tensor) { fetch in
            for adapter in adapters {
                try add(adapter, AdapterTensors(adapter: adapter.name, fetch: fetch))
            }
        }
    }

    private mutating func add(_ adapter: Adapter, _ source: AdapterTensors) throws {
        for module in adapter.modules {
            switch module.change {
            case .lowRank(let settings): try addLowRank(module, settings, source)
            case .ia3(let settings): try addIA3(module, settings, source)
            case .wholeTensor(let whole):
                if case .rows(let rows) = whole.effect {
                    try addRows(module, rows: rows, of: adapter, source)
                } else {
                    try addFullTensor(module, adds: whole.effect == .delta, source)
                }
            case .bottleneck(let site): try addBottleneck(module, site, settings: adapter.settings, source)
            case .prefix(let layer): try addPrefix(module, layer: layer, settings: adapter.settings, source)
            case .prompt: try addPrompt(module, settings: adapter.settings, source)
            case .loha(let settings): try addLoHa(module, settings, source)
            case .lokr(let settings): try addLoKr(module, settings, source)
            case .adalora(let settings): try addAdaLoRA(module, settings, source)
            case .vera(let settings): try addVeRA(module, settings, source)
            }
        }
        if adapter.kind == .prefix { try checkPrefixComplete(adapter) }
    }

    func prefix(layer: Int) -> (keys: TokenMatrix, values: TokenMatrix)? {
        prefixKeys.isEmpty ? nil : (prefixKeys[layer], prefixValues[layer])
    }

    func currentValue(_ id: ParameterID) throws -> [Float] {
        try overrides[id] ?? model.parameters.floats(id)
    }
}

/// Fetches one adapter's tensors by role, checking that a module carries only the roles its kind
/// uses and converting to fp32.
struct AdapterTensors {
    let adapter: String
    let fetch: (String) throws -> HostTensor

    /// The module carries the roles its kind requires and no role the kind lacks.
    func checkRoles(of module: AdapterModule) throws {
        let rules = module.change.rules
        if let extra = module.tensors.keys.sorted().first(where: { !rules.roles.contains($0) }) {
            throw RuntimeError.unexpectedAdapterTensor(adapter: adapter, target: module.target, role: extra)
        }
        if let missing = rules.requiredRoles.first(where: { module.tensors[$0] == nil }) {
            throw RuntimeError.missingAdapterTensor(adapter: adapter, target: module.target, role: missing)
        }
    }

    func optional(_ role: String, of module: AdapterModule) throws -> (name: String, shape: [Int], values: [Float])? {
        guard let name = module.tensors[role] else { return nil }
        let tensor = try fetch(name)
        guard tensor.dtype.isFloatingPoint else {
            throw RuntimeError.invalidAdapter(adapter: adapter, reason: "tensor \(name) has non-float dtype \(tensor.dtype.rawValue)")
        }
        return (name, tensor.shape, tensor.floats())
    }

    func require(_ role: String, of module: AdapterModule) throws -> (name: String, shape: [Int], values: [Float]) {
        guard let found = try optional(role, of: module) else {
            throw RuntimeError.missingAdapterTensor(adapter: adapter, target: module.target, role: role)
        }
        return found
    }

    /// Checks `shape` against the shape the model needs; `alternatives` are equivalent layouts
    /// of the same elements (a vector saved as [n, 1] or [1, n]).
    func check(_ tensor: (name: String, shape: [Int], values: [Float]), _ expected: [Int],
               alternatives: [[Int]] = []) throws {
        guard tensor.shape == expected || alternatives.contains(tensor.shape) else {
            throw RuntimeError.adapterTensorShape(adapter: adapter, tensor: tensor.name, shape: tensor.shape,
                                                  expected: Shape.describe(expected))
        }
    }

    func fail(_ reason: String) -> RuntimeError {
        RuntimeError.invalidAdapter(adapter: adapter, reason: reason)
    }
}

/// Kinds whose ΔW is a dense matrix formed from their factors (LoHa, LoKr): PEFT forms it and
/// adds F.linear(x, ΔW); the runtime adds it to the weight the layer uses, rounded once to fp32.
extension AdapterSet {
    func denseDeltaTarget(_ module: AdapterModule, kind: String, _ source: AdapterTensors) throws -> (ParameterID, LinearModule) {
        guard let reference = model.module(named: module.target) else {
            throw RuntimeError.unknownTarget(adapter: source.adapter, target: module.target)
        }
        guard case .linear(let index) = reference, !model.linears[index].storedTransposed else {
            throw source.fail("module \(module.target) is not an nn.Linear; \(kind) adapts linear layers stored [out, in]")
        }
        return (model.linears[index].weight, model.linears[index])
    }

    mutating func addDenseDelta(_ delta: [Double], to id: ParameterID) throws {
        overrides[id] = zip(try currentValue(id), delta).map { Float(Double($0) + $1) }
    }
}
