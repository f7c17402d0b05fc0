import Foundation

/// What merging does to one base tensor: the adapter modules that change it, in order, each with
/// the user's weight. Built and checked before anything is written.
struct TensorChange {
    enum Operation {
        case lowRank(AdapterModule, LowRankModule, adapter: Int)
        case dora(AdapterModule, LowRankModule, adapter: Int)
        case ia3(AdapterModule, IA3Module, adapter: Int)
        case replace(tensor: String, adapter: Int)
        case replaceRows(tensor: String, rows: [Int], adapter: Int)
        case delta(tensor: String, adapter: Int)
        case addBias(tensor: String, scale: Double, adapter: Int)
        /// A kind whose ΔW is formed in full from its factors (LoHa, LoKr).
        case denseProduct(AdapterModule, adapter: Int)
        case adaLoRA(AdapterModule, AdaLoRAModule, adapter: Int)
        case veRA(AdapterModule, VeRAModule, adapter: Int)
    }

    var operations: [(operation: Operation, weight: Double)] = []
}

/// One adapter to merge or stack (`adapter` nil: every adapter of the pack) and its weight.
public struct MergeInput {
    public var pack: String
    public var adapter: String?
    public var weight: Double

    public init(pack: String, adapter: String?, weight: Double) {
        self.pack = pack
        self.adapter = adapter
        self.weight = weight
    }
}

enum MergePlanner {
    /// Maps every base tensor an adapter changes to its ordered operations.
    static func plan(adapters: [(adapter: Adapter, weight: Double)], base: BaseModel, skipUnmergeable: Bool,
                     file: (Int) -> String) throws -> (changes: [String: TensorChange], skipped: [String]) {
        var changes: [String: TensorChange] = [:]
        var skipped: [String] = []
        for (index, (adapter, weight)) in adapters.enumerated() {
            if !adapter.kind.rules.mergeable && !adapter.modules.contains(where: \.isWholeTensor) {
                guard skipUnmergeable else {
                    throw InputError(file: file(index), problem: "adapter \(adapter.name) is a \(adapter.kind.rawValue) adapter: it adds computation (\(adapter.kind.rules.addedComputation ?? "no weight change")) and cannot be folded into weights", kind: .notMergeable)
                }
                skipped.append(adapter.name)
                continue
            }
            var adapterChanges = AdapterChanges(adapter: adapter, index: index, weight: weight, base: base, file: file(index))
            try adapterChanges.addModules()
            for (tensor, operations) in adapterChanges.operations {
                changes[tensor, default: TensorChange()].operations += operations
            }
        }
        guard !changes.isEmpty else {
            // The output would be a copy of the base under a merged model's name.
            let files = Set((0..<adapters.count).map(file)).sorted().joined(separator: ", ")
            throw InputError(file: files, problem: skipped.isEmpty
                ? "nothing to merge: the adapters change no base weight"
                : "nothing to merge: every adapter was left out as unmergeable (\(skipped.joined(separator: ", "))), so the output would be a copy of the base")
        }
        return (changes, skipped)
    }
}

/// The operations one adapter applies to the base tensors it changes, in module order.
private struct AdapterChanges {
    let adapter: Adapter
    let index: Int
    let weight: Double
    let base: BaseModel
    let file: String
    private(set) var operations: [String: [(operation: TensorChange.Operation, weight: Double)]] = [:]

    init(adapter: Adapter, index: Int, weight: Double, base: BaseModel, file: String) {
        self.adapter = adapter
        self.index = index
        self.weight = weight
        self.base = base
        self.file = file
    }

    mutating func addModules() throws {
        // A module's full tensor is the base its low-rank update applies to (PEFT saves the
        // embedding it wraps, and modules_to_save copies), so replacements go first.
        let ordered = adapter.modules.filter(\.isWholeTensor) + adapter.modules.filter { !$0.isWholeTensor }
        for module in ordered { try addModule(module) }
    }

    private mutating func addModule(_ module: AdapterModule) throws {
        switch module.change {
        case .wholeTensor(let whole):
            try addWholeTensor(module, whole)
        case .lowRank(let settings):
            let weightName = try resolve(module.target + ".weight")
            add(module.tensors[TensorRole.magnitude] != nil ? .dora(module, settings, adapter: index) : .lowRank(module, settings, adapter: index),
                to: weightName)
            try addBiasChanges(module, scale: settings.scale)
        case .ia3(let settings):
            let weightName = try resolve(module.target + ".weight")
            add(.ia3(module, settings, adapter: index), to: weightName)
            if settings.side == .output, let bias = base.resolve(module.target + ".bias") {
                add(.ia3(module, settings, adapter: index), to: bias)
            }
            try addBiasChanges(module, scale: 1)
        case .loha, .lokr:
            add(.denseProduct(module, adapter: index), to: try resolve(module.target + ".weight"))
        case .adalora(let settings):
            add(.adaLoRA(module, settings, adapter: index), to: try resolve(module.target + ".weight"))
        case .vera(let settings):
            add(.veRA(module, settings, adapter: index), to: try resolve(module.target + ".weight"))
        case .bottleneck, .prefix, .prompt:
            return
        }
    }

    private mutating func addWholeTensor(_ module: AdapterModule, _ whole: WholeTensorModule) throws {
        guard let tensor = module.tensors[TensorRole.fullValue] else { return }
        let target = try resolve(module.target)
        let operation: TensorChange.Operation
        switch whole.effect {
        case .rows(let rows): operation = .replaceRows(tensor: tensor, rows: rows, adapter: index)
        case .replace: operation = .replace(tensor: tensor, adapter: index)
        case .delta: operation = .delta(tensor: tensor, adapter: index)
        }
        add(operation, to: target)
        if module.replacedRows != nil, let tie = base.tie, target == tie.embedding,
           !adapter.modules.contains(where: { $0.replacedRows != nil && base.resolve($0.target) == tie.head }) {
            // PEFT ties a tied head's TrainableTokens to the embedding's (the runtime's rule).
            add(operation, to: tie.head)
        }
    }

    /// The bias a LoRA module trains (PEFT `bias`) or its B projection's bias.
    private mutating func addBiasChanges(_ module: AdapterModule, scale: Double) throws {
        if let tensor = module.tensors[TensorRole.targetBias] {
            add(.replace(tensor: tensor, adapter: index), to: try resolve(module.target + ".bias"))
        }
        if let tensor = module.tensors[TensorRole.loraBBias] {
            add(.addBias(tensor: tensor, scale: scale, adapter: index), to: try resolve(module.target + ".bias"))
        }
    }

    private func resolve(_ name: String) throws -> String {
        guard let resolved = base.resolve(name) else {
            throw InputError(file: file, problem: "adapter \(adapter.name) targets \(name), which the base at \(base.folder) does not have")
        }
        return resolved
    }

    private mutating func add(_ operation: TensorChange.Operation, to tensor: String) {
        operations[tensor, default: []].append((operation, weight))
    }
}

extension MergeInput {
    /// Inputs from the command line's `PACK` or `PACK:ADAPTER` specs (a path that exists as
    /// written is a pack, colon or not) and their weights (none given: 1 each).
    public static func parse(_ specs: [String], weights: [Double]) -> [MergeInput] {
        specs.enumerated().map { position, spec in
            let parts = spec.split(separator: ":", maxSplits: 1)
            let isPackThenAdapter = parts.count == 2 && !FileManager.default.fileExists(atPath: spec)
            return MergeInput(pack: isPackThenAdapter ? String(parts[0]) : spec, adapter: isPackThenAdapter ? String(parts[1]) : nil,
                              weight: weights.isEmpty ? 1 : weights[position])
        }
    }
}
