import Foundation

/// A base model folder: its config.json fields and its weights, with names resolved the way
/// adapters refer to them (with or without the model-class prefix).
public final class BaseModel {
    public let folder: String
    public let checkpoint: Checkpoint
    public let identity: BaseModelIdentity
    /// Set when the output head is the token embedding (see `EmbeddingTie`).
    public let tie: EmbeddingTie?
    /// The base's family, when it is one peftpack knows.
    public let family: Architecture?
    /// Prefixes an adapter's names may carry or lack relative to this checkpoint: the family's,
    /// every registered family's (adapters saved against another class of the same model), PEFT's
    /// `base_model.`, and for an unknown family the first component most tensor names share.
    private let prefixes: [String]

    public init(folder: String) throws {
        self.folder = folder
        checkpoint = try Checkpoint(path: folder)
        var identity = BaseModelIdentity()
        let json = checkpoint.configText.flatMap { try? StrictJSON.parse(Array($0.utf8)) }
        tie = EmbeddingTie(config: json, tensorNames: Set(checkpoint.names))
        family = ArchitectureRegistry.architecture(modelType: json?["model_type"]?.stringValue,
                                                   className: json?["architectures"]?.arrayValue?.first?.stringValue)
        prefixes = Self.prefixes(family: family, names: checkpoint.names)
        if let json {
            func integer(_ keys: String...) -> Int? {
                for key in keys { if let value = json[key]?.integerValue { return Int(value) } }
                return nil
            }
            identity.architecture = json["architectures"]?.arrayValue?.first?.stringValue
            identity.modelType = json["model_type"]?.stringValue
            identity.hiddenSize = integer("hidden_size", "n_embd", "d_model")
            identity.numLayers = integer("num_hidden_layers", "n_layer", "num_layers")
            identity.numAttentionHeads = integer("num_attention_heads", "n_head")
            identity.numKeyValueHeads = integer("num_key_value_heads") ?? identity.numAttentionHeads
            identity.vocabSize = integer("vocab_size")
        }
        if family?.outputHead != nil || tie != nil { identity.tieWordEmbeddings = tie != nil }
        self.identity = identity
    }

    /// The checkpoint name of a tensor an adapter names, trying it as given, then with a known
    /// model-class prefix removed or added. A tied head resolves to its own name, which the
    /// checkpoint may lack: its value is the embedding's (`info`, `storedName`).
    public func resolve(_ name: String) -> String? {
        if let tie, name == tie.head || name == "base_model.model." + tie.head { return tie.head }
        if checkpoint.info(name) != nil { return name }
        for prefix in prefixes {
            if name.hasPrefix(prefix), checkpoint.info(String(name.dropFirst(prefix.count))) != nil {
                return String(name.dropFirst(prefix.count))
            }
            if checkpoint.info(prefix + name) != nil { return prefix + name }
        }
        return nil
    }

    private static func prefixes(family: Architecture?, names: [String]) -> [String] {
        var prefixes = (family.map { [$0] } ?? []) .map { $0.checkpointPrefix + "." }
        if family == nil {
            let firsts = Dictionary(grouping: names.compactMap { $0.split(separator: ".").first.map(String.init) }) { $0 }
            if let (dominant, members) = firsts.max(by: { $0.value.count < $1.value.count }), members.count * 2 > names.count {
                prefixes.append(dominant + ".")
            }
        }
        for other in ArchitectureRegistry.all.map({ $0.checkpointPrefix + "." }) + ["base_model."] where !prefixes.contains(other) {
            prefixes.append(other)
        }
        return prefixes
    }

    /// `adapter` with the layouts this base's modules have: what a pack recorded without a base,
    /// or recorded wrongly, is corrected rather than trusted.
    public func withModuleLayouts(_ adapter: Adapter) -> Adapter {
        ModuleLayoutRule.correcting(adapter, modelType: identity.modelType)
    }

    /// Checks an adapter's shapes against this base (in this base's module layouts); returns the
    /// checkpoint names it targets.
    public func check(_ adapter: Adapter, shapes: (String) -> [Int]?, file: String) throws -> [String] {
        let adapter = withModuleLayouts(adapter)
        var targeted: [String] = []
        for module in adapter.modules {
            guard let wanted = module.targetedTensor else { continue }
            guard let name = resolve(wanted), let info = info(name) else {
                throw InputError(file: file, problem: "adapter \(adapter.name) targets \(wanted), which the base at \(folder) does not have")
            }
            targeted.append(name)
            if let rows = module.replacedRows {
                try checkRows(module, rows: rows, adapter: adapter, base: info, shapes: shapes, file: file)
                continue
            }
            let expected = expectedShape(module, adapter: adapter, shapes: shapes)
            if let expected, expected != info.shape {
                throw InputError(file: file, problem: "adapter \(adapter.name): \(module.target) implies a weight of shape \(Shape.describe(expected)) but the base's \(name) is \(Shape.describe(info.shape))")
            }
        }
        return targeted
    }

    /// A resolved tensor's name, dtype and shape; a tied head has the embedding's dtype and shape.
    public func info(_ name: String) -> TensorInfo? {
        guard let tie, name == tie.head, let embedding = checkpoint.info(tie.embedding) else { return checkpoint.info(name) }
        return TensorInfo(name: name, dtype: embedding.dtype, shape: embedding.shape)
    }

    /// The checkpoint tensor holding a resolved name's bytes: the embedding for a tied head.
    public func storedName(_ name: String) -> String {
        tie?.storedName(name) ?? name
    }

    /// Replaced rows must be rows of the base tensor, each as wide as the base's.
    func checkRows(_ module: AdapterModule, rows: [Int], adapter: Adapter, base: TensorInfo, shapes: (String) -> [Int]?, file: String) throws {
        guard base.shape.count == 2, let value = module.tensors[TensorRole.fullValue].flatMap(shapes), value == [rows.count, base.shape[1]] else {
            throw InputError(file: file, problem: "adapter \(adapter.name): \(rows.count) replacement rows of \(module.target) do not fit the base's \(base.name) of shape \(Shape.describe(base.shape))")
        }
        if let bad = rows.first(where: { $0 >= base.shape[0] }) {
            throw InputError(file: file, problem: "adapter \(adapter.name) replaces row \(bad) of \(module.target), but the base's \(base.name) has \(base.shape[0]) rows")
        }
    }

    /// The checkpoint names of the tensors an adapter changes that this base has: `check`
    /// without its refusals, for callers that apply adapters their own way (the runtime).
    public func targets(of adapter: Adapter) -> [String] {
        adapter.modules.compactMap { $0.targetedTensor.flatMap(resolve) }
    }

    func expectedShape(_ module: AdapterModule, adapter: Adapter, shapes: (String) -> [Int]?) -> [Int]? {
        switch module.change {
        case .wholeTensor:
            return module.tensors[TensorRole.fullValue].flatMap(shapes)
        case .lowRank(let settings):
            guard let a = module.tensors[TensorRole.loraA].flatMap(shapes), let b = module.tensors[TensorRole.loraB].flatMap(shapes),
                  a.count == 2, b.count == 2 else { return nil }
            return WeightOrientation(out: b[0], inputs: a[1], layout: settings.layout).storedShape
        case .adalora(let settings):
            guard let a = module.tensors[TensorRole.loraA].flatMap(shapes), let b = module.tensors[TensorRole.loraB].flatMap(shapes),
                  a.count == 2, b.count == 2 else { return nil }
            return WeightOrientation(out: b[0], inputs: a[1], layout: settings.layout).storedShape
        case .loha:
            guard let w1a = module.tensors[TensorRole.hadamardW1A].flatMap(shapes), let w1b = module.tensors[TensorRole.hadamardW1B].flatMap(shapes),
                  w1a.count == 2, w1b.count == 2 else { return nil }
            return [w1a[0], w1b[1]]
        case .lokr(let settings):
            let sides = [1, 2].map { side in
                try? LoKrModule.factorShape(side: side, roles: Set(module.tensors.keys), rank: settings.rank,
                                            shape: { role in shapes(module.tensors[role]!) ?? [] }, fail: { InputError(file: module.target, problem: $0) })
            }
            guard let w1 = sides[0], let w2 = sides[1] else { return nil }
            return [w1.rows * w2.rows, w1.cols * w2.cols]
        default:
            return nil
        }
    }

    /// XXH3-64 of the sorted `name\tdtype\t[d0,d1,…]\n` lines of the targeted tensors (spec),
    /// with every dtype read as `dtype` when one is given.
    public func fingerprint(of names: [String], as dtype: DType? = nil) -> String {
        let text = Set(names.map(storedName)).sorted().compactMap { name -> String? in
            guard let info = checkpoint.info(name) else { return nil }
            return "\(name)\t\((dtype ?? info.dtype).rawValue)\t[\(info.shape.map(String.init).joined(separator: ","))]\n"
        }.joined()
        return XXH3.hex(XXH3.hash64(Array(text.utf8)))
    }

    /// This base's identity with what binds a pack to it: the targeted tensors' fingerprint,
    /// dtypes, shapes and content hashes.
    public func identity(binding targeted: [String]) throws -> BaseModelIdentity {
        var bound = identity
        bound.fingerprint = fingerprint(of: targeted)
        bound.contentHashes = try contentHashes(of: targeted)
        bound.tensors = Dictionary(uniqueKeysWithValues: Set(targeted.map(storedName)).compactMap { name in
            checkpoint.info(name).map { (name, BaseTensorRecord(dtype: $0.dtype.rawValue, shape: $0.shape)) }
        })
        return bound
    }

    public func contentHashes(of names: [String]) throws -> [String: String] {
        var hashes: [String: String] = [:]
        for name in Set(names.map(storedName)) {
            hashes[name] = XXH3.hex(try checkpoint.withBytes(name) { XXH3.hash64($0) })
            // Hashing maps the whole base; dropping each tensor's pages keeps RSS at one tensor.
            checkpoint.releasePages(name)
        }
        return hashes
    }
}
