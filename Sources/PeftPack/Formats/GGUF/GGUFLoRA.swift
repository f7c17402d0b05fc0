import Foundation

/// LoRA adapters as llama.cpp loads them (`llama_adapter_lora_init`): a GGUF file with
/// `general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`, the base's
/// `general.architecture`, and for every adapted weight `<llama.cpp tensor name>.lora_a`
/// (ne = [in, r], i.e. PEFT's A) and `.lora_b` (ne = [r, out], PEFT's B). llama.cpp scales each
/// product by alpha / r with r read from that tensor pair, so peftpack folds every module's true
/// scale (α/r, α/√r for rsLoRA, rank/alpha patterns, stacking weights) into B against one global
/// alpha, which then reproduces ΔW exactly whatever each module's rank.
public enum GGUFLoRA {
    /// The registered families llama.cpp has a graph for (`Architecture.llamaCpp`).
    static var families: [Architecture] { ArchitectureRegistry.all.filter { $0.llamaCpp != nil } }

    /// llama.cpp's tensor name (without ".weight") for a transformers module name, or nil.
    /// What a whole-tensor module is, from the key PEFT saved it under: a `base_layer` weight is
    /// the copy of the base layer PEFT saves beside a LoRA on an embedding or output layer
    /// (save_embedding_layers); any other whole tensor is a trained modules_to_save copy.
    static func wholeTensorOrigin(_ module: AdapterModule) -> String {
        guard let key = module.wholeTensor?.sourceName, key.contains(".base_layer.") else { return "(modules_to_save)" }
        return "with \(key), the base layer's weight PEFT saves beside a LoRA on an embedding or output layer (save_embedding_layers)"
    }

    /// PEFT's saved copy of a base layer (save_embedding_layers) holding the base the pack
    /// recorded: it changes nothing, and llama.cpp's converter drops `.base_layer.weight` too. A
    /// copy in a wider dtype counts when it rounds to the base's values in the base's dtype: the
    /// fp32 original of an F16 GGUF base is that base (the only difference is the base's own
    /// rounding, which the runtime would use anyway). On a tied base the head is recorded under the
    /// embedding it is stored as.
    static func isUnchangedBaseLayer(_ module: AdapterModule, reader: PackReader, base: BaseModelIdentity, family: Architecture) throws -> Bool {
        guard isBaseLayer(module), let whole = module.wholeTensor, whole.effect == .replace,
              let stored = module.tensors[TensorRole.fullValue] else { return false }
        let recorded = recordedName(module.target, base: base, family: family)
        guard let recordedHash = base.contentHashes?[recorded], let record = base.tensors?[recorded],
              let baseDType = DType(rawValue: record.dtype), baseDType.isFloatingPoint
        else { return false }
        var tensor = try reader.readTensor(stored)
        guard tensor.shape == record.shape else { return false }
        if tensor.dtype != baseDType {
            tensor = HostTensor(floats: tensor.floats(), shape: tensor.shape, dtype: baseDType)
        }
        return XXH3.hex(XXH3.hash64(tensor.bytes)) == recordedHash
    }

    /// The name the pack records a base tensor under: a tied head's is its embedding's.
    static func recordedName(_ target: String, base: BaseModelIdentity, family: Architecture) -> String {
        guard base.contentHashes?[target] == nil, let head = family.outputHead, target == "\(head).weight" else { return target }
        return family.tokenEmbeddingWeight
    }

    static func isBaseLayer(_ module: AdapterModule) -> Bool {
        module.wholeTensor?.sourceName?.contains(".base_layer.") == true
    }

    /// Why a saved base layer could not be dropped: it differs from the base, or the pack has no
    /// record of the base to compare with.
    static func baseLayerFinding(_ module: AdapterModule, base: BaseModelIdentity, family: Architecture) -> String {
        guard isBaseLayer(module) else { return "" }
        return base.contentHashes?[recordedName(module.target, base: base, family: family)] == nil
            ? " (the pack records no base to show it unchanged)"
            : " (it differs from the base the pack records: resized or trained, or that base is quantized)"
    }

    static func ggufName(module: String, family: Architecture) -> (name: String, module: LayerModule)? {
        var name = Substring(module)
        for prefix in ["base_model.model.", family.checkpointPrefix + "."] where name.hasPrefix(prefix) { name = name.dropFirst(prefix.count) }
        if let head = family.outputHead, name == head { return ("output", LayerModule(head)) }
        guard let (layer, suffix) = family.layerPosition(of: String(name)),
              let layerModule = family.layerModules.first(where: { $0.suffix == suffix }), let mapped = layerModule.llamaCppName
        else { return nil }
        return ("blk.\(layer).\(mapped)", layerModule)
    }

    /// The transformers module name for a llama.cpp tensor name (inverse of ggufName).
    static func moduleName(gguf: String, family: Architecture) -> (name: String, module: LayerModule)? {
        if gguf == "output", let head = family.outputHead { return (head, LayerModule(head)) }
        let parts = gguf.split(separator: ".", maxSplits: 2)
        guard parts.count == 3, parts[0] == "blk", let layer = Int(parts[1]),
              let layerModule = family.layerModules.first(where: { $0.llamaCppName == String(parts[2]) }) else { return nil }
        return ("\(family.checkpointPrefix).\(family.layerModulePath(layer, layerModule.suffix))", layerModule)
    }

    /// The head count that splits `module`'s output rows into rotary heads, when llama.cpp's
    /// converter reorders them for `family`.
    static func permutedHeads(_ module: LayerModule, family: Architecture, base: BaseModelIdentity?) -> (permuted: Bool, heads: Int?) {
        guard family.llamaCpp?.permutesRotaryRows == true, let rows = module.rotaryRows else { return (false, nil) }
        switch rows {
        case .queryHeads: return (true, base?.numAttentionHeads)
        case .keyValueHeads: return (true, base?.numKeyValueHeads)
        }
    }

    /// convert_hf_to_gguf.py's LlamaModel.permute on the output rows of q_proj/k_proj: within each
    /// head, rows (half, j) become (j, half) so rotary pairs sit next to each other.
    static func permuteRows(_ values: [Float], rows: Int, columns: Int, heads: Int, inverse: Bool) -> [Float] {
        guard heads > 0, rows % (2 * heads) == 0 else { return values }
        let headSize = rows / heads, half = headSize / 2
        var out = [Float](repeating: 0, count: values.count)
        for head in 0..<heads {
            for part in 0..<2 {
                for j in 0..<half {
                    let original = head * headSize + part * half + j
                    let permuted = head * headSize + 2 * j + part
                    let (from, to) = inverse ? (permuted, original) : (original, permuted)
                    for column in 0..<columns { out[to * columns + column] = values[from * columns + column] }
                }
            }
        }
        return out
    }

    public struct ExportOptions {
        public var type: GGUF.ElementType
        public init(type: GGUF.ElementType = .f32) { self.type = type }
    }

    /// The family of the pack's base, which llama.cpp must have a graph for. A base the pack names
    /// but the export has no tensor mapping for is unsupported, whether or not it was checked at
    /// import; only a pack that names no base at all is helped by importing it with its base.
    static func llamaCppFamily(of base: BaseModelIdentity, file: String) throws -> Architecture {
        let family = ArchitectureRegistry.architecture(modelType: base.modelType, className: base.architecture)
        if let family, family.llamaCpp != nil { return family }
        let supported = families.flatMap(\.classNames).filter { $0.hasSuffix("ForCausalLM") || $0.hasSuffix("LMHeadModel") }.sorted().joined(separator: ", ")
        let named = [base.architecture, base.modelType.map { "model_type \($0)" }].compactMap { $0 }
        guard !named.isEmpty else {
            throw InputError(file: file, problem: "records no base architecture (GGUF export supports \(supported))", kind: .baseNotRecorded)
        }
        throw InputError(file: file, problem: "is for a \(named.joined(separator: ", ")) base, which GGUF export does not support (it supports \(supported))")
    }

    /// The GGUF bytes of one LoRA adapter of a pack.
    public static func export(_ adapter: Adapter, document: PackDocument, reader: PackReader, options: ExportOptions) throws -> [UInt8] {
        let file = reader.path
        guard adapter.kind.exports(to: .gguf) else {
            if adapter.kind == .ia3 {
                throw InputError(file: file, problem: "adapter \(adapter.name) is IA3, which GGUF LoRA files cannot express; merge it (peftpack merge), or merge and extract a LoRA at a chosen rank (peftpack extract)")
            }
            if [.loha, .lokr, .adalora, .vera].contains(adapter.kind) {
                throw InputError(file: file, problem: "adapter \(adapter.name) is \(adapter.kind.rawValue), and GGUF adapters for llama.cpp hold LoRA only; rewrite it as a LoRA first (peftpack convert)", kind: .notExpressible)
            }
            throw InputError(file: file, problem: "adapter \(adapter.name) is a \(adapter.kind.rawValue) adapter; GGUF adapters for llama.cpp hold LoRA only")
        }
        let base = document.base ?? BaseModelIdentity()
        let family = try llamaCppFamily(of: base, file: file)
        let architecture = family.llamaCpp!.architecture
        var modules: [(gguf: String, layerModule: LayerModule, scale: Double, a: [Float], b: [Float], rank: Int, out: Int, inputs: Int)] = []
        for module in adapter.modules {
            if module.replacedRows != nil {
                throw InputError(file: file, problem: "adapter \(adapter.name) replaces rows of \(module.target) (trainable_token_indices), which GGUF LoRA files cannot express; merge it instead")
            }
            if module.isWholeTensor {
                if try isUnchangedBaseLayer(module, reader: reader, base: base, family: family) { continue }
                let unrecorded = isBaseLayer(module) && base.contentHashes?[recordedName(module.target, base: base, family: family)] == nil
                throw InputError(file: file, problem: "adapter \(adapter.name) replaces \(module.target) whole \(wholeTensorOrigin(module)), which GGUF LoRA files cannot express\(baseLayerFinding(module, base: base, family: family)); merge it instead",
                                 kind: unrecorded ? .baseNotRecorded : .malformed)
            }
            if module.tensors[TensorRole.magnitude] != nil {
                throw InputError(file: file, problem: "adapter \(adapter.name) is DoRA, which llama.cpp cannot apply; merge it (peftpack merge), or merge and extract a plain LoRA (peftpack extract)")
            }
            if module.tensors[TensorRole.loraBBias] != nil || module.tensors[TensorRole.targetBias] != nil {
                throw InputError(file: file, problem: "adapter \(adapter.name) trains the bias of \(module.target), which GGUF LoRA files cannot express; merge it instead")
            }
            guard let settings = module.lowRank else {
                throw InputError(file: file, problem: "adapter \(adapter.name) module \(module.target) lacks LoRA factors of matching rank")
            }
            if settings.layout == .embedding {
                throw InputError(file: file, problem: "adapter \(adapter.name) adapts the embedding \(module.target); peftpack's GGUF export handles linear layers only")
            }
            guard let (gguf, layerModule) = ggufName(module: module.target, family: family) else {
                throw InputError(file: file, problem: "adapter \(adapter.name) targets \(module.target), which has no llama.cpp tensor in a \(architecture) model")
            }
            guard let aName = module.tensors[TensorRole.loraA], let bName = module.tensors[TensorRole.loraB],
                  let aShape = reader.entry(named: aName)?.shape, let bShape = reader.entry(named: bName)?.shape,
                  aShape.count == 2, bShape.count == 2, aShape[0] == bShape[1] else {
                throw InputError(file: file, problem: "adapter \(adapter.name) module \(module.target) lacks LoRA factors of matching rank")
            }
            modules.append((gguf, layerModule, settings.scale, try reader.readTensor(aName).floats(), try reader.readTensor(bName).floats(), aShape[0], bShape[0], aShape[1]))
        }
        guard !modules.isEmpty else { throw InputError(file: file, problem: "adapter \(adapter.name) has no LoRA modules") }
        // One global alpha; each B absorbs scale·r/alpha. The largest rank keeps those factors ≤ 1
        // for plain LoRA and exact when ranks are powers of two.
        let alpha = Float(modules.map(\.rank).max()!)
        var tensors: [(name: String, shape: [Int], type: GGUF.ElementType, data: [UInt8])] = []
        for entry in modules.sorted(by: { $0.gguf.localizedStandardCompare($1.gguf) == .orderedAscending }) {
            let fold = Float(entry.scale * Double(entry.rank) / Double(alpha))
            var b = entry.b.map { $0 * fold }
            let (permuted, heads) = permutedHeads(entry.layerModule, family: family, base: base)
            if permuted {
                guard let heads else {
                    let problem = "records no attention head counts, which the q/k row order of llama.cpp needs"
                    guard base.fingerprint == nil else {
                        throw InputError(file: file, problem: problem + "; the base config.json it was imported with has none")
                    }
                    throw InputError(file: file, problem: problem, kind: .baseNotRecorded)
                }
                b = permuteRows(b, rows: entry.out, columns: entry.rank, heads: heads, inverse: false)
            }
            for (suffix, values, shape) in [("lora_a", entry.a, [entry.rank, entry.inputs]), ("lora_b", b, [entry.out, entry.rank])] {
                let type: GGUF.ElementType = options.type == .q8_0 && shape[1] % 32 != 0 ? .f32 : options.type
                tensors.append(("\(entry.gguf).weight.\(suffix)", shape, type, GGUF.encode(values, as: type)))
            }
        }
        let metadata: [(String, GGUF.Value)] = [
            ("general.architecture", .string(architecture)),
            ("general.type", .string("adapter")),
            ("general.name", .string(adapter.name)),
            ("adapter.type", .string("lora")),
            ("adapter.lora.alpha", .float32(alpha)),
        ]
        return GGUF.write(metadata: metadata, tensors: tensors)
    }

    /// A GGUF LoRA adapter (from llama.cpp's convert_lora_to_gguf.py or from peftpack) as a pack
    /// adapter: names mapped back to the transformers modules, Llama's q/k rows put back in
    /// transformers' order (which needs the head counts of `base`), and alpha / r as each module's
    /// scale. Tensors are stored in fp32.
    public static func importAdapter(path: String, name: String?, base: BaseModel?) throws -> (adapter: ImportedAdapter, identity: BaseModelIdentity) {
        let file = try GGUF.File(path: path)
        guard file.value("general.type")?.stringValue == "adapter", file.value("adapter.type")?.stringValue == "lora" else {
            throw InputError(file: path, problem: "is a GGUF file but not a LoRA adapter (general.type = \(file.value("general.type")?.stringValue ?? "none"), adapter.type = \(file.value("adapter.type")?.stringValue ?? "none"))")
        }
        let architecture = file.value("general.architecture")?.stringValue
        // Families sharing a llama.cpp graph (Llama and Mistral) name their tensors alike: the first registered reads them.
        guard let family = families.first(where: { $0.llamaCpp?.architecture == architecture }) else {
            let readable = Set(families.compactMap { $0.llamaCpp?.architecture }).sorted().joined(separator: ", ")
            throw InputError(file: path, problem: "is an adapter for architecture \(architecture ?? "none"); peftpack reads \(readable) adapters")
        }
        let alpha = file.value("adapter.lora.alpha")?.doubleValue ?? 0
        let adapterName = name ?? "default"
        var pairs: [String: (a: GGUF.TensorEntry?, b: GGUF.TensorEntry?)] = [:]
        for tensor in file.tensors {
            for suffix in [".weight.lora_a", ".weight.lora_b"] where tensor.name.hasSuffix(suffix) {
                let key = String(tensor.name.dropLast(suffix.count))
                if suffix.hasSuffix("a") { pairs[key, default: (nil, nil)].a = tensor } else { pairs[key, default: (nil, nil)].b = tensor }
            }
        }
        guard !pairs.isEmpty else { throw InputError(file: path, problem: "holds no .lora_a/.lora_b tensor pairs") }
        var modules: [AdapterModule] = []
        var tensors: [ImportedTensor] = []
        for key in pairs.keys.sorted(by: { $0.localizedStandardCompare($1) == .orderedAscending }) {
            guard let a = pairs[key]!.a, let b = pairs[key]!.b else {
                throw InputError(file: path, problem: "tensor \(key).weight has only one of lora_a and lora_b")
            }
            guard a.shape.count == 2, b.shape.count == 2, a.shape[0] == b.shape[1] else {
                throw InputError(file: path, problem: "tensors of \(key) have inconsistent shapes: lora_a \(Shape.describe(a.shape)), lora_b \(Shape.describe(b.shape))")
            }
            guard let (module, layerModule) = moduleName(gguf: key, family: family) else {
                throw InputError(file: path, problem: "tensor \(key) has no transformers counterpart in a \(architecture ?? "") model")
            }
            let rank = a.shape[0], outFeatures = b.shape[0], inFeatures = a.shape[1]
            var target = module
            if let base {
                guard let resolved = base.resolve(module + ".weight") else {
                    throw InputError(file: path, problem: "tensor \(key) maps to \(module), which the base at \(base.folder) does not have")
                }
                let shape = base.info(resolved)!.shape
                guard shape == (layerModule.layout == .conv1d ? [inFeatures, outFeatures] : [outFeatures, inFeatures]) else {
                    throw InputError(file: path, problem: "tensor \(key) implies a \(outFeatures)×\(inFeatures) weight but the base's \(resolved) is \(Shape.describe(shape))")
                }
                target = String(resolved.dropLast(".weight".count))
            }
            let (permuted, heads) = permutedHeads(layerModule, family: family, base: base?.identity)
            let aName = AdapterModule.tensorName(adapter: adapterName, target: target, role: TensorRole.loraA)
            let bName = AdapterModule.tensorName(adapter: adapterName, target: target, role: TensorRole.loraB)
            tensors.append(ImportedTensor(packName: aName, info: TensorInfo(name: aName, dtype: .f32, shape: [rank, inFeatures])) {
                HostTensor(floats: file.floats(a), shape: [rank, inFeatures], dtype: .f32)
            })
            tensors.append(ImportedTensor(packName: bName, info: TensorInfo(name: bName, dtype: .f32, shape: [outFeatures, rank])) {
                var values = file.floats(b)
                if permuted {
                    guard let heads else {
                        throw InputError(file: path, tensor: key + ".weight.lora_b", problem: "is in llama.cpp's rotary row order, which only the base's head counts undo", kind: .needsBaseModel)
                    }
                    values = permuteRows(values, rows: outFeatures, columns: rank, heads: heads, inverse: true)
                }
                return HostTensor(floats: values, shape: [outFeatures, rank], dtype: .f32)
            })
            let settings = LowRankModule(layout: layerModule.layout, rank: rank, scale: alpha != 0 ? alpha / Double(rank) : 1)
            modules.append(AdapterModule(target: target, change: .lowRank(settings),
                                         tensors: [TensorRole.loraA: aName, TensorRole.loraB: bName]))
        }
        let adapter = Adapter(name: adapterName, kind: .lora, source: AdapterSource(format: "gguf"), modules: modules)
        var identity = BaseModelIdentity()
        identity.modelType = family.modelType
        return (ImportedAdapter(adapter: adapter, tensors: tensors), identity)
    }
}
