import Foundation

/// A LoRA or DoRA pack adapter as the folder mlx-lm loads. mlx-lm has one rank and one scale per
/// adapter and no patterns, so every module's own scale (α/r, α/√r for rsLoRA, rank and alpha
/// patterns, stacking weights) is folded into its B against one adapter-wide `scale`: the most
/// common module scale, so those modules keep B bit for bit and the others are multiplied once in
/// fp64 and rounded to fp32. Lower ranks are zero-padded to the largest (zero columns of A and
/// rows of B add nothing). mlx-lm adapts the `keys` in the last `num_layers` layers, so
/// num_layers reaches back to the first adapted layer and every module of that range the adapter
/// leaves alone is written with zero factors (DoRA: without `m`, which mlx-lm then sets to the
/// base weight's own norm, a factor of exactly 1). The token embedding and an untied head are
/// root `keys`; on a tied base mlx-lm's head is embed_tokens.as_linear, so an embedding LoRA is
/// written only when the pack changes the head by the same factors (MLXTiedHead). A full
/// fine-tune of whole replacement tensors is written as mlx-lm's `full` (MLXFullExport).
public enum MLXExporter {
    public struct Output {
        public var configText: String
        public var tensors: [(key: String, tensor: HostTensor)]
    }

    /// Where mlx-lm's linear_to_lora_layers builds a module's LoRA layer: a `keys` suffix inside
    /// a layer, or a path from the model root.
    enum Position: Hashable {
        case layer(Int, suffix: String)
        case root(String)
    }

    struct ExportedModule {
        var position: Position
        var scale: Double
        var rank: Int
        /// lora_a's rows: a linear's input features, an embedding's vocabulary.
        var inputs: Int
        var out: Int
        var a: [Float]
        var b: [Float]
        var magnitude: HostTensor?
    }

    public static func export(_ adapter: Adapter, document: PackDocument, reader: PackReader) throws -> Output {
        let file = reader.path
        try checkKind(adapter, file: file)
        let base = document.base ?? BaseModelIdentity()
        let family = try mlxFamily(of: base, file: file)
        guard let totalLayers = base.numLayers else {
            throw InputError(file: file, problem: "records no layer count of its base, which MLX's num_layers needs", kind: .baseNotRecorded)
        }
        if adapter.kind == .full {
            return try MLXFullExport.export(adapter, base: base, family: family, totalLayers: totalLayers, reader: reader)
        }
        var modules: [ExportedModule] = []
        for module in adapter.modules {
            if module.isWholeTensor {
                if try GGUFLoRA.isUnchangedBaseLayer(module, reader: reader, base: base, family: family) { continue }
                let what = module.replacedRows != nil ? "replaces rows of \(module.target) (trainable_token_indices)" : "replaces \(module.target) whole (modules_to_save)"
                throw InputError(file: file, problem: "adapter \(adapter.name) \(what), which an MLX LoRA adapter cannot hold; merge it instead (peftpack merge)", kind: .notExpressible)
            }
            modules.append(try exportedModule(module, adapter: adapter, family: family, totalLayers: totalLayers, reader: reader))
        }
        guard !modules.isEmpty else { throw InputError(file: file, problem: "adapter \(adapter.name) has no LoRA modules") }
        try MLXTiedHead.fold(&modules, adapter: adapter, base: base, family: family, file: file)
        let dora = modules.filter { $0.magnitude != nil }.count
        guard dora == 0 || dora == modules.count else {
            throw InputError(file: file, problem: "adapter \(adapter.name) mixes DoRA and plain LoRA modules, and an MLX adapter is one or the other (fine_tune_type)", kind: .notExpressible)
        }
        let scale = commonScale(modules)
        let rank = modules.map(\.rank).max()!
        var layered: [Int: [String: ExportedModule]] = [:]
        var shapes: [String: (inputs: Int, out: Int)] = [:]
        var roots: [String: ExportedModule] = [:]
        for module in modules {
            switch module.position {
            case .layer(let layer, let suffix):
                layered[layer, default: [:]][suffix] = module
                shapes[suffix] = (module.inputs, module.out)
            case .root(let path):
                roots[path] = module
            }
        }
        let suffixes = shapes.keys.sorted()
        // No layer module: num_layers 0 (every layer), where no root key matches a layer's module.
        let firstLayer = layered.keys.min() ?? totalLayers

        var tensors: [(key: String, tensor: HostTensor)] = []
        func append(_ module: ExportedModule, as name: String) {
            let (a, b) = factors(module, rank: rank, scale: scale)
            tensors.append((name + MLXAdapterFormat.loraA, a))
            tensors.append((name + MLXAdapterFormat.loraB, b))
            if let magnitude = module.magnitude { tensors.append((name + MLXAdapterFormat.magnitude, magnitude)) }
        }
        for layer in firstLayer..<totalLayers {
            for suffix in suffixes {
                let name = "\(family.checkpointPrefix).\(family.layerModulePath(layer, suffix))"
                let dims = shapes[suffix]!
                guard let module = layered[layer]?[suffix] else {
                    tensors.append((name + MLXAdapterFormat.loraA, HostTensor(floats: [Float](repeating: 0, count: dims.inputs * rank), shape: [dims.inputs, rank], dtype: .f32)))
                    tensors.append((name + MLXAdapterFormat.loraB, HostTensor(floats: [Float](repeating: 0, count: rank * dims.out), shape: [rank, dims.out], dtype: .f32)))
                    continue
                }
                append(module, as: name)
            }
        }
        for path in roots.keys.sorted() { append(roots[path]!, as: path) }
        let configText = try config(adapter: adapter, fineTuneType: dora > 0 ? .dora : .lora,
                                    numLayers: totalLayers - firstLayer, rank: rank, scale: scale, keys: suffixes + roots.keys.sorted())
        return Output(configText: configText, tensors: tensors)
    }

    /// What MLX adapters hold: low-rank adapters and full fine-tunes; the rest is refused with what to do.
    static func checkKind(_ adapter: Adapter, file: String) throws {
        switch adapter.kind {
        case .lora: return
        case .ia3:
            throw InputError(file: file, problem: "adapter \(adapter.name) is IA3, which MLX adapters cannot express; merge it (peftpack merge), or merge and extract a LoRA at a chosen rank (peftpack extract)", kind: .notExpressible)
        case .prefix, .prompt, .bottleneck:
            throw InputError(file: file, problem: "adapter \(adapter.name) is a \(adapter.kind.rawValue) adapter, which adds computation mlx-lm has no layer for (MLX adapters hold LoRA and DoRA)", kind: .notExpressible)
        case .full: return
        case .adalora, .vera:
            throw InputError(file: file, problem: "adapter \(adapter.name) is \(adapter.kind == .vera ? "VeRA" : "AdaLoRA"); rewrite it as a plain LoRA first (peftpack convert), which MLX holds", kind: .notExpressible)
        case .loha, .lokr:
            throw InputError(file: file, problem: "adapter \(adapter.name) is \(adapter.kind == .loha ? "LoHa" : "LoKr"), which MLX's LoRA layers do not hold; rewrite it as a LoRA first (peftpack convert), or merge it (peftpack merge)", kind: .notExpressible)
        }
    }

    /// The family of the pack's base, when mlx-lm names its layers' modules as transformers does.
    static func mlxFamily(of base: BaseModelIdentity, file: String) throws -> Architecture {
        let supported = MLXAdapterFormat.modelTypes.sorted().joined(separator: ", ")
        guard let family = ArchitectureRegistry.architecture(modelType: base.modelType, className: base.architecture) else {
            let named = [base.architecture, base.modelType.map { "model_type \($0)" }].compactMap { $0 }
            guard !named.isEmpty else {
                throw InputError(file: file, problem: "records no base architecture (MLX export supports model types \(supported))", kind: .baseNotRecorded)
            }
            throw InputError(file: file, problem: "is for a \(named.joined(separator: ", ")) base, which MLX export does not support (it supports model types \(supported))", kind: .notExpressible)
        }
        guard MLXAdapterFormat.modelTypes.contains(family.modelType) else {
            throw InputError(file: file, problem: "is for a \(family.modelType) base, which MLX export does not support (it supports model types \(supported))", kind: .notExpressible)
        }
        return family
    }

    static func exportedModule(_ module: AdapterModule, adapter: Adapter, family: Architecture, totalLayers: Int, reader: PackReader) throws -> ExportedModule {
        let file = reader.path
        let name = "adapter \(adapter.name)"
        if module.tensors[TensorRole.loraBBias] != nil || module.tensors[TensorRole.targetBias] != nil {
            throw InputError(file: file, problem: "\(name) trains the bias of \(module.target), which MLX's LoRA layers have no tensor for; merge it instead", kind: .notExpressible)
        }
        guard let settings = module.lowRank, let aName = module.tensors[TensorRole.loraA], let bName = module.tensors[TensorRole.loraB] else {
            throw InputError(file: file, problem: "\(name) module \(module.target) lacks LoRA factors")
        }
        let position = try position(of: module, layout: settings.layout, dora: module.tensors[TensorRole.magnitude] != nil,
                                    name: name, family: family, totalLayers: totalLayers, file: file)
        let a = try reader.readTensor(aName), b = try reader.readTensor(bName)
        guard a.shape.count == 2, b.shape.count == 2, a.shape[0] == settings.rank, b.shape[1] == settings.rank else {
            throw InputError(file: file, problem: "\(name) module \(module.target) has LoRA factors \(Shape.describe(a.shape)) and \(Shape.describe(b.shape)), not of rank \(settings.rank)")
        }
        let magnitude = try module.tensors[TensorRole.magnitude].map { HostTensor(floats: try reader.readTensor($0).floats(), shape: [b.shape[0]], dtype: .f32) }
        return ExportedModule(position: position, scale: settings.scale, rank: settings.rank,
                              inputs: a.shape[1], out: b.shape[0], a: a.floats(), b: b.floats(), magnitude: magnitude)
    }

    /// Where a pack module's LoRA layer goes: a linear inside a layer, the token embedding
    /// (mlx-lm's LoRAEmbedding: lora_a [vocab, r] = PEFT's lora_embedding_Aᵀ, as for a linear), or
    /// the output head.
    static func position(of module: AdapterModule, layout: WeightLayout, dora: Bool, name: String, family: Architecture,
                         totalLayers: Int, file: String) throws -> Position {
        let embedding = "\(family.checkpointPrefix).\(family.tokenEmbedding)"
        switch layout {
        case .embedding:
            guard module.target == embedding else {
                throw InputError(file: file, problem: "\(name) adapts the embedding \(module.target); mlx-lm adapts the token embedding \(embedding) only", kind: .notExpressible)
            }
            guard !dora else {
                throw InputError(file: file, problem: "\(name) puts DoRA on the embedding \(module.target): mlx-lm's DoRAEmbedding normalises each token's row, PEFT's DoRA each feature, so MLX cannot hold it", kind: .notExpressible)
            }
            return .root(embedding)
        case .linear:
            if let (layer, suffix) = family.layerPosition(of: module.target), family.layerModules.contains(where: { $0.suffix == suffix }) {
                guard layer < totalLayers else {
                    throw InputError(file: file, problem: "\(name) targets \(module.target) but the base has \(totalLayers) layers")
                }
                return .layer(layer, suffix: suffix)
            }
            if let head = family.outputHead, module.target == head { return .root(head) }
            throw InputError(file: file, problem: "\(name) targets \(module.target), which is neither a linear module inside a layer nor the embedding or head, the modules an MLX adapter's keys address", kind: .notExpressible)
        case .conv1d:
            throw InputError(file: file, problem: "\(name) adapts \(module.target), laid out as conv1d; mlx-lm's LoRA layers are linear or embedding", kind: .notExpressible)
        }
    }

    /// The scale most modules have (ties: the smaller), so most B tensors stay as they are.
    static func commonScale(_ modules: [ExportedModule]) -> Double {
        var counts: [Double: Int] = [:]
        for module in modules { counts[module.scale, default: 0] += 1 }
        return counts.max { ($0.value, -$0.key) < ($1.value, -$1.key) }!.key
    }

    /// MLX's A [in, R] = PEFT's Aᵀ and B [R, out] = (scale_module / scale · B)ᵀ, zero-padded to rank R.
    static func factors(_ module: ExportedModule, rank: Int, scale: Double) -> (HostTensor, HostTensor) {
        let fold = module.scale / scale
        var a = [Float](repeating: 0, count: module.inputs * rank)
        var b = [Float](repeating: 0, count: rank * module.out)
        for j in 0..<module.rank {
            for i in 0..<module.inputs { a[i * rank + j] = module.a[j * module.inputs + i] }
            for o in 0..<module.out {
                let value = module.b[o * module.rank + j]
                b[j * module.out + o] = fold == 1 ? value : Float(Double(value) * fold)
            }
        }
        return (HostTensor(floats: a, shape: [module.inputs, rank], dtype: .f32),
                HostTensor(floats: b, shape: [rank, module.out], dtype: .f32))
    }

    /// adapter_config.json: an adapter imported from MLX keeps its training arguments, with the
    /// loading fields set to what the tensors now need.
    static func config(adapter: Adapter, fineTuneType: MLXAdapterFormat.FineTuneType, numLayers: Int, rank: Int, scale: Double, keys: [String]) throws -> String {
        try config(adapter: adapter, fineTuneType: fineTuneType, numLayers: numLayers) { parameters in
            parameters["rank"] = rank
            parameters["scale"] = scale
            parameters["dropout"] = parameters["dropout"] ?? 0.0
            parameters["keys"] = keys
        }
    }

    /// The training arguments with the loading fields set; `parameters` edits lora_parameters,
    /// nil writes it null (a full fine-tune, as mlx-lm's train_model saves one).
    static func config(adapter: Adapter, fineTuneType: MLXAdapterFormat.FineTuneType, numLayers: Int,
                       parameters edit: ((inout [String: Any]) -> Void)?) throws -> String {
        var config: [String: Any] = [:]
        if let source = adapter.source, source.format == AdapterSourceKind.mlx.rawValue, let text = source.configText,
           let original = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] {
            config = original
        }
        if let edit {
            var parameters = config["lora_parameters"] as? [String: Any] ?? [:]
            edit(&parameters)
            config["lora_parameters"] = parameters
        } else {
            config["lora_parameters"] = NSNull()
        }
        config["fine_tune_type"] = fineTuneType.rawValue
        config["num_layers"] = numLayers
        let data = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}
