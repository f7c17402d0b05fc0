import Foundation

/// A LoRA or DoRA pack adapter as the folder mlx-lm loads. mlx-lm has one rank and one scale per
/// adapter and no patterns, so every module's own scale (α/r, α/√r for rsLoRA, rank and alpha
/// patterns, stacking weights) is folded into its B against one adapter-wide `scale`: the most
/// common module scale, so those modules keep B bit for bit and the others are multiplied once in
/// fp64 and rounded to fp32. Lower ranks are zero-padded to the largest (zero columns of A and
/// rows of B add nothing). mlx-lm adapts the `keys` in the last `num_layers` layers, so
/// num_layers reaches back to the first adapted layer and every module of that range the adapter
/// leaves alone is written with zero factors (DoRA: without `m`, which mlx-lm then sets to the
/// base weight's own norm, a factor of exactly 1).
public enum MLXExporter {
    public struct Output {
        public var configText: String
        public var tensors: [(key: String, tensor: HostTensor)]
    }

    struct ExportedModule {
        var layer: Int
        var suffix: String
        var scale: Double
        var rank: Int
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
        let dora = modules.filter { $0.magnitude != nil }.count
        guard dora == 0 || dora == modules.count else {
            throw InputError(file: file, problem: "adapter \(adapter.name) mixes DoRA and plain LoRA modules, and an MLX adapter is one or the other (fine_tune_type)", kind: .notExpressible)
        }
        let scale = commonScale(modules)
        let rank = modules.map(\.rank).max()!
        let firstLayer = modules.map(\.layer).min()!
        let keys = Array(Set(modules.map(\.suffix))).sorted()
        var shapes: [String: (inputs: Int, out: Int)] = [:]
        for module in modules { shapes[module.suffix] = (module.inputs, module.out) }
        var byPosition: [String: ExportedModule] = [:]
        for module in modules { byPosition["\(module.layer)/\(module.suffix)"] = module }

        var tensors: [(key: String, tensor: HostTensor)] = []
        for layer in firstLayer..<totalLayers {
            for suffix in keys {
                let name = "\(family.checkpointPrefix).\(family.layerModulePath(layer, suffix))"
                let dims = shapes[suffix]!
                guard let module = byPosition["\(layer)/\(suffix)"] else {
                    tensors.append((name + MLXAdapterFormat.loraA, HostTensor(floats: [Float](repeating: 0, count: dims.inputs * rank), shape: [dims.inputs, rank], dtype: .f32)))
                    tensors.append((name + MLXAdapterFormat.loraB, HostTensor(floats: [Float](repeating: 0, count: rank * dims.out), shape: [rank, dims.out], dtype: .f32)))
                    continue
                }
                let (a, b) = factors(module, rank: rank, scale: scale)
                tensors.append((name + MLXAdapterFormat.loraA, a))
                tensors.append((name + MLXAdapterFormat.loraB, b))
                if let magnitude = module.magnitude { tensors.append((name + MLXAdapterFormat.magnitude, magnitude)) }
            }
        }
        let configText = try config(adapter: adapter, fineTuneType: dora > 0 ? .dora : .lora,
                                    numLayers: totalLayers - firstLayer, rank: rank, scale: scale, keys: keys)
        return Output(configText: configText, tensors: tensors)
    }

    /// What MLX adapters hold: low-rank adapters; everything else is refused with what to do.
    static func checkKind(_ adapter: Adapter, file: String) throws {
        switch adapter.kind {
        case .lora: return
        case .ia3:
            throw InputError(file: file, problem: "adapter \(adapter.name) is IA3, which MLX adapters cannot express; merge it (peftpack merge), or merge and extract a LoRA at a chosen rank (peftpack extract)", kind: .notExpressible)
        case .prefix, .prompt, .bottleneck:
            throw InputError(file: file, problem: "adapter \(adapter.name) is a \(adapter.kind.rawValue) adapter, which adds computation mlx-lm has no layer for (MLX adapters hold LoRA and DoRA)", kind: .notExpressible)
        case .full:
            throw InputError(file: file, problem: "adapter \(adapter.name) is a full fine-tune; peftpack exports LoRA and DoRA adapters to MLX (merge it instead: peftpack merge)", kind: .notExpressible)
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
        guard settings.layout == .linear else {
            throw InputError(file: file, problem: "\(name) adapts \(module.target), laid out as \(settings.layout.rawValue); peftpack's MLX export handles the linear layers inside the model's layers", kind: .notExpressible)
        }
        guard let (layer, suffix) = family.layerPosition(of: module.target), family.layerModules.contains(where: { $0.suffix == suffix }) else {
            throw InputError(file: file, problem: "\(name) targets \(module.target), which is not a linear module inside a layer, the only modules an MLX adapter's keys address there", kind: .notExpressible)
        }
        guard layer < totalLayers else {
            throw InputError(file: file, problem: "\(name) targets \(module.target) but the base has \(totalLayers) layers")
        }
        let a = try reader.readTensor(aName), b = try reader.readTensor(bName)
        guard a.shape.count == 2, b.shape.count == 2, a.shape[0] == settings.rank, b.shape[1] == settings.rank else {
            throw InputError(file: file, problem: "\(name) module \(module.target) has LoRA factors \(Shape.describe(a.shape)) and \(Shape.describe(b.shape)), not of rank \(settings.rank)")
        }
        let magnitude = try module.tensors[TensorRole.magnitude].map { HostTensor(floats: try reader.readTensor($0).floats(), shape: [b.shape[0]], dtype: .f32) }
        return ExportedModule(layer: layer, suffix: suffix, scale: settings.scale, rank: settings.rank,
                              inputs: a.shape[1], out: b.shape[0], a: a.floats(), b: b.floats(), magnitude: magnitude)
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
        var config: [String: Any] = [:]
        if let source = adapter.source, source.format == AdapterSourceKind.mlx.rawValue, let text = source.configText,
           let original = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] {
            config = original
        }
        var parameters = config["lora_parameters"] as? [String: Any] ?? [:]
        parameters["rank"] = rank
        parameters["scale"] = scale
        parameters["dropout"] = parameters["dropout"] ?? 0.0
        parameters["keys"] = keys
        config["lora_parameters"] = parameters
        config["fine_tune_type"] = fineTuneType.rawValue
        config["num_layers"] = numLayers
        let data = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}
