import Foundation

/// Turns a pack adapter back into what PEFT saves: adapter_config.json text and the tensors of
/// adapter_model.safetensors under PEFT's keys, with PEFT's shapes.
public enum PeftExporter {
    public struct Output {
        public var configText: String
        public var tensors: [(key: String, tensor: HostTensor)]
    }

    public static func export(_ adapter: Adapter, tensor: (String) throws -> HostTensor) throws -> Output {
        if adapter.kind == .full {
            throw InputError(file: adapter.name, problem: "is a full fine-tune (whole replacement tensors), which no PEFT adapter type holds; merge it (peftpack merge) for the fine-tuned model, and extract a LoRA from that at a chosen rank (peftpack extract)", kind: .notExpressible)
        }
        guard adapter.kind.exports(to: .peft) else {
            throw InputError(file: adapter.name, problem: "\(adapter.kind.rawValue) adapters are AdapterHub's", kind: .onlyAdapterHubExpresses)
        }
        var out: [(key: String, tensor: HostTensor)] = []
        switch adapter.kind {
        case .lora, .ia3, .full, .loha, .lokr, .adalora, .vera:
            for module in adapter.modules {
                if let whole = module.wholeTensor {
                    if whole.effect == .delta {
                        throw InputError(file: adapter.name, problem: "\(module.target) is stored as a dense delta, which PEFT cannot express", kind: .denseDelta)
                    }
                    guard let name = module.tensors[TensorRole.fullValue] else { continue }
                    let key = whole.sourceName ?? PeftKeys.modelPrefix + (module.replacedRows != nil
                        ? TrainableTokenRows.module(ofTarget: module.target) + PeftKeys.trainableTokensSuffix : module.target)
                    out.append((key, try tensor(name)))
                    continue
                }
                for (role, name) in module.tensors.sorted(by: { $0.key < $1.key }) {
                    var value = try tensor(name)
                    if role == TensorRole.singularValues {
                        value = value.reshaped([value.elementCount, 1])
                    }
                    if role == TensorRole.ia3Vector {
                        value = value.reshaped(module.ia3?.side == .input ? [1, value.elementCount] : [value.elementCount, 1])
                    }
                    let suffix = adapter.settings.magnitudeKeySuffix ?? ".lora_magnitude_vector"
                    let key = PeftKeys.factorKey(target: module.target, role: role, change: module.change)
                        ?? PeftKeys.key(target: module.target, role: role, layout: module.layout, magnitudeSuffix: suffix)
                    // VeRA's modules share one pair of projections, saved once.
                    if module.change.isVeRA, out.contains(where: { $0.key == key }) { continue }
                    out.append((key, value))
                }
            }
        case .prompt:
            guard let name = adapter.modules.first?.tensors[TensorRole.promptEmbeddings] else {
                throw InputError(file: adapter.name, problem: "prompt adapter has no embeddings")
            }
            out.append((PeftKeys.promptEmbeddings, try tensor(name)))
        case .prefix:
            let layers = adapter.modules.sorted { ($0.layer ?? 0) < ($1.layer ?? 0) }
            var blocks: [HostTensor] = []
            for module in layers {
                guard let keys = module.tensors[TensorRole.prefixKeys], let values = module.tensors[TensorRole.prefixValues] else {
                    throw InputError(file: adapter.name, problem: "prefix layer \(module.target) lacks keys or values")
                }
                blocks.append(try tensor(keys))
                blocks.append(try tensor(values))
            }
            guard !blocks.isEmpty else { throw InputError(file: adapter.name, problem: "prefix adapter has no layers") }
            out.append((PeftKeys.promptEmbeddings, PrefixLayout.join(blocks)))
        case .bottleneck:
            preconditionFailure("refused above by the kind's rules")
        }
        let configText: String
        if let source = adapter.source, source.format == "peft", let text = source.configText {
            configText = text
        } else {
            configText = try freshConfig(for: adapter)
        }
        return Output(configText: configText, tensors: out)
    }

    /// A LoRA config for adapters that never had one (made by extract or stack, or imported from
    /// another tool): the most common rank and scale become r and lora_alpha, every other module
    /// gets exact rank_pattern/alpha_pattern entries under its full module name, so PEFT resolves
    /// the same scale for every module.
    static func freshConfig(for adapter: Adapter) throws -> String {
        guard adapter.kind == .lora else {
            throw InputError(file: adapter.name, problem: "has no PEFT config to export and only LoRA configs can be made up")
        }
        // A plain loop rather than compactMap into a labelled tuple: Swift 6's release-mode
        // CopyPropagation pass crashes on the latter here (the fuzz build compiles with -O).
        var lowRank: [(module: AdapterModule, settings: LowRankModule)] = []
        for module in adapter.modules {
            if let settings = module.lowRank { lowRank.append((module, settings)) }
        }
        guard !lowRank.isEmpty else { throw InputError(file: adapter.name, problem: "has no LoRA modules") }
        func alpha(_ settings: LowRankModule) -> Double { settings.scale * Double(settings.rank) }
        var counts: [String: (rank: Int, alpha: Double, count: Int)] = [:]
        for entry in lowRank {
            let settings = entry.settings
            let key = "\(settings.rank)/\(alpha(settings))"
            counts[key, default: (settings.rank, alpha(settings), 0)].count += 1
        }
        let common = counts.values.max { ($0.count, -$0.rank) < ($1.count, -$1.rank) }!
        var rankPattern: [String: Int] = [:]
        var alphaPattern: [String: Double] = [:]
        for (module, settings) in lowRank where settings.rank != common.rank || alpha(settings) != common.alpha {
            let exact = NSRegularExpression.escapedPattern(for: module.target)
            rankPattern[exact] = settings.rank
            alphaPattern[exact] = alpha(settings)
        }
        let fanInFanOut = lowRank.contains { $0.settings.layout == .conv1d }
        let useDoRA = lowRank.contains { $0.module.tensors[TensorRole.magnitude] != nil }
        let targets = Array(Set(lowRank.map(\.module.target))).sorted()
        var tokenIndices: [String: [Int]] = [:]
        for module in adapter.modules {
            if let rows = module.replacedRows { tokenIndices[TrainableTokenRows.module(ofTarget: module.target)] = rows }
        }
        // modules_to_save names modules: a whole tensor `x.weight` or `x.bias` saves module `x`.
        let saved = Array(Set(adapter.modules.filter { $0.isWholeTensor && $0.replacedRows == nil }.map { module -> String in
            let parts = module.target.split(separator: ".")
            return parts.count > 1 && ["weight", "bias"].contains(parts.last!) ? parts.dropLast().joined(separator: ".") : module.target
        })).sorted()
        let trainsBias = lowRank.contains { $0.module.tensors[TensorRole.targetBias] != nil }
        let config: [String: Any] = [
            "peft_type": "LORA",
            "r": common.rank,
            "lora_alpha": common.alpha,
            "rank_pattern": rankPattern,
            "alpha_pattern": alphaPattern,
            "target_modules": targets,
            "fan_in_fan_out": fanInFanOut,
            "use_dora": useDoRA,
            "use_rslora": false,
            "bias": trainsBias ? "lora_only" : "none",
            "lora_dropout": 0.0,
            "modules_to_save": saved.isEmpty ? NSNull() : saved,
            "trainable_token_indices": tokenIndices.isEmpty ? NSNull() : tokenIndices,
            "task_type": NSNull(),
            "inference_mode": true,
        ]
        let data = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}
