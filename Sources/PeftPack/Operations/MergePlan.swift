import Foundation

/// What merging does to one base tensor: the adapter modules that change it, in order, each with
/// the user's weight. Built and checked before anything is written.
struct TensorChange {
    enum Operation {
        case lowRank(AdapterModule, adapter: Int)
        case dora(AdapterModule, adapter: Int)
        case ia3(AdapterModule, adapter: Int)
        case replace(tensor: String, adapter: Int)
        case replaceRows(tensor: String, rows: [Int], adapter: Int)
        case delta(tensor: String, adapter: Int)
        case addBias(tensor: String, scale: Double, adapter: Int)
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
    static let mergeableKinds: Set<AdapterKind> = [.lora, .ia3, .full]

    /// Maps every base tensor an adapter changes to its ordered operations.
    static func plan(adapters: [(adapter: Adapter, weight: Double)], base: BaseModel, skipUnmergeable: Bool,
                     file: (Int) -> String) throws -> (changes: [String: TensorChange], skipped: [String]) {
        var changes: [String: TensorChange] = [:]
        var skipped: [String] = []
        for (index, (adapter, weight)) in adapters.enumerated() {
            let fullOnly = !mergeableKinds.contains(adapter.kind)
            if fullOnly && !adapter.modules.contains(where: { $0.mode != nil }) {
                guard skipUnmergeable else {
                    throw InputError(file: file(index), problem: "adapter \(adapter.name) is a \(adapter.kind.rawValue) adapter: it adds computation (\(reason(adapter.kind))) and cannot be folded into weights", kind: .notMergeable)
                }
                skipped.append(adapter.name)
                continue
            }
            // A module's full tensor is the base its low-rank update applies to (PEFT saves the
            // embedding it wraps, and modules_to_save copies), so replacements go first.
            let ordered = adapter.modules.filter { $0.mode != nil } + adapter.modules.filter { $0.mode == nil }
            for module in ordered {
                func resolve(_ name: String) throws -> String {
                    guard let resolved = base.resolve(name) else {
                        throw InputError(file: file(index), problem: "adapter \(adapter.name) targets \(name), which the base at \(base.folder) does not have")
                    }
                    return resolved
                }
                if module.mode != nil {
                    guard let tensor = module.tensors[TensorRole.fullValue] else { continue }
                    let target = try resolve(module.target)
                    let operation: TensorChange.Operation
                    switch module.mode {
                    case .rows?: operation = .replaceRows(tensor: tensor, rows: module.rows ?? [], adapter: index)
                    case .replace?: operation = .replace(tensor: tensor, adapter: index)
                    default: operation = .delta(tensor: tensor, adapter: index)
                    }
                    changes[target, default: TensorChange()].operations.append((operation, weight))
                    if module.mode == .rows, let tie = base.tie, target == tie.embedding,
                       !adapter.modules.contains(where: { $0.mode == .rows && base.resolve($0.target) == tie.head }) {
                        // PEFT ties a tied head's TrainableTokens to the embedding's (the runtime's rule).
                        changes[tie.head, default: TensorChange()].operations.append((operation, weight))
                    }
                    continue
                }
                if fullOnly { continue }
                let weightName = try resolve(module.target + ".weight")
                switch adapter.kind {
                case .lora:
                    let operation: TensorChange.Operation = module.tensors[TensorRole.magnitude] != nil ? .dora(module, adapter: index) : .lowRank(module, adapter: index)
                    changes[weightName, default: TensorChange()].operations.append((operation, weight))
                case .ia3:
                    changes[weightName, default: TensorChange()].operations.append((.ia3(module, adapter: index), weight))
                    if module.side == .output, let bias = base.resolve(module.target + ".bias") {
                        changes[bias, default: TensorChange()].operations.append((.ia3(module, adapter: index), weight))
                    }
                default:
                    continue
                }
                if let tensor = module.tensors[TensorRole.targetBias] {
                    let bias = try resolve(module.target + ".bias")
                    changes[bias, default: TensorChange()].operations.append((.replace(tensor: tensor, adapter: index), weight))
                }
                if let tensor = module.tensors[TensorRole.loraBBias] {
                    let bias = try resolve(module.target + ".bias")
                    changes[bias, default: TensorChange()].operations.append((.addBias(tensor: tensor, scale: module.scale ?? 1, adapter: index), weight))
                }
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

    static func reason(_ kind: AdapterKind) -> String {
        switch kind {
        case .bottleneck: "bottleneck MLPs between sub-layers"
        case .prefix: "extra attention keys and values"
        case .prompt: "virtual input tokens"
        default: "no weight change"
        }
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
