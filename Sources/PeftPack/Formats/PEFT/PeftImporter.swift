import Foundation

/// Turns a PEFT adapter (its adapter_config.json text and saved tensors) into a pack adapter.
/// Every saved tensor is accounted for exactly once, and every shape is checked against the
/// config, so a pack never holds an adapter PEFT would load differently.
public enum PeftImporter {
    /// `dropUnloaded`: leave out (and list) saved tensors PEFT would not load instead of refusing.
    public static func importAdapter(name: String, configText: String, tensors: TensorSource,
                                     configFile: String, weightsFile: String, dropUnloaded: Bool = false) throws -> ImportedAdapter {
        let config = try PeftConfig(text: configText, file: configFile)
        let source = AdapterSource(format: "peft", configText: configText)
        switch config.peftType {
        case "LORA":
            return try importLowRank(name: name, kind: .lora, config: config, source: source, tensors: tensors, file: weightsFile,
                                     dropUnloaded: dropUnloaded)
        case "IA3":
            return try importLowRank(name: name, kind: .ia3, config: config, source: source, tensors: tensors, file: weightsFile,
                                     dropUnloaded: dropUnloaded)
        case "LOHA":
            return try importLowRank(name: name, kind: .loha, config: config, source: source, tensors: tensors, file: weightsFile,
                                     dropUnloaded: dropUnloaded)
        case "LOKR":
            return try importLowRank(name: name, kind: .lokr, config: config, source: source, tensors: tensors, file: weightsFile,
                                     dropUnloaded: dropUnloaded)
        case "ADALORA":
            return try importLowRank(name: name, kind: .adalora, config: config, source: source, tensors: tensors, file: weightsFile,
                                     dropUnloaded: dropUnloaded)
        case "VERA":
            return try importLowRank(name: name, kind: .vera, config: config, source: source, tensors: tensors, file: weightsFile,
                                     dropUnloaded: dropUnloaded)
        case "PREFIX_TUNING":
            return try importPrefix(name: name, config: config, source: source, tensors: tensors, file: weightsFile)
        case "PROMPT_TUNING", "P_TUNING":
            return try importPrompt(name: name, config: config, source: source, tensors: tensors, file: weightsFile)
        default:
            throw InputError(file: configFile, problem: "peft_type \(config.peftType) is not supported (LORA, IA3, LOHA, LOKR, ADALORA, VERA, PREFIX_TUNING, PROMPT_TUNING, P_TUNING are)")
        }
    }

    /// LoRA/DoRA, IA3, LoHa and LoKr: tensors grouped per target module; anything that is not an adapter
    /// factor (modules_to_save copies, saved embedding layers) becomes a full replacement module.
    static func importLowRank(name: String, kind: AdapterKind, config: PeftConfig, source: AdapterSource,
                              tensors: TensorSource, file: String, dropUnloaded: Bool = false) throws -> ImportedAdapter {
        var order: [String] = []
        var roles: [String: [String: String]] = [:]
        var layouts: [String: WeightLayout] = [:]
        var magnitudeSuffix = ".lora_magnitude_vector"
        var fullModules: [AdapterModule] = []
        var imported: [ImportedTensor] = []
        var leftOut: [(tensor: String, reason: String)] = []
        let loadCheck = PeftLoadCheck(config: config)
        var tokenRows = TrainableTokenRows(config: config)

        var veraShared: [String: String] = [:]
        for key in tensors.tensorNames.sorted() {
            guard let info = tensors.info(key) else { continue }
            if kind == .vera, let shared = PeftKeys.veraShared.first(where: { $0.key == key }) {
                let packName = AdapterModule.tensorName(adapter: name, target: "shared", role: shared.role)
                veraShared[shared.role] = packName
                imported.append(ImportedTensor(packName: packName, info: TensorInfo(name: packName, dtype: info.dtype, shape: info.shape)) {
                    try tensors.tensor(key)
                })
                continue
            }
            guard key.hasPrefix(PeftKeys.modelPrefix) else {
                throw InputError(file: file, tensor: key, problem: "is not a PEFT \(config.peftType) tensor (expected a base_model.model. prefix)")
            }
            let path = String(key.dropFirst(PeftKeys.modelPrefix.count))
            if let core = PeftKeys.convolutionCoreSuffixes.first(where: { path.hasSuffix($0) }) {
                throw InputError(file: file, tensor: key, problem: "is a \(core.dropFirst()) convolution core (use_effective_conv2d), for Conv layers, which peftpack does not adapt")
            }
            if let reason = loadCheck.whyNotLoaded(path) {
                guard dropUnloaded else {
                    throw InputError(file: file, tensor: key, problem: "PEFT would not load it: \(reason)", kind: .notLoadedByItsTool)
                }
                leftOut.append((key, reason))
                continue
            }
            if path.hasSuffix(PeftKeys.trainableTokensSuffix) {
                let module = String(path.dropLast(PeftKeys.trainableTokensSuffix.count))
                let rows = try tokenRows.claim(module: module, key: key, shape: info.shape, file: file)
                let target = module + ".weight"
                let packName = AdapterModule.tensorName(adapter: name, target: target, role: TensorRole.fullValue)
                fullModules.append(AdapterModule(target: target, change: .wholeTensor(WholeTensorModule(.rows(rows), sourceName: key)),
                                                 tensors: [TensorRole.fullValue: packName]))
                imported.append(ImportedTensor(packName: packName, info: TensorInfo(name: packName, dtype: info.dtype, shape: info.shape)) {
                    try tensors.tensor(key)
                })
                continue
            }
            if let match = PeftKeys.factorSuffixes(of: kind).first(where: { path.hasSuffix($0.suffix) }) {
                let isIA3Role = match.role == TensorRole.ia3Vector
                let isBias = match.role == TensorRole.targetBias
                guard isBias || [.loha, .lokr, .adalora, .vera].contains(kind) || isIA3Role == (kind == .ia3) else {
                    throw InputError(file: file, tensor: key, problem: "does not belong in a \(config.peftType) adapter")
                }
                let target = String(path.dropLast(match.suffix.count))
                if roles[target] == nil {
                    order.append(target)
                    roles[target] = [:]
                }
                guard roles[target]![match.role] == nil else {
                    throw InputError(file: file, tensor: key, problem: "is a second \(match.role) tensor for \(target)")
                }
                roles[target]![match.role] = key
                if let layout = match.layout { layouts[target] = layout }
                if match.role == TensorRole.magnitude { magnitudeSuffix = match.suffix }
            } else {
                let targetTensor = path.replacingOccurrences(of: ".base_layer.", with: ".")
                let packName = AdapterModule.tensorName(adapter: name, target: targetTensor, role: TensorRole.fullValue)
                fullModules.append(AdapterModule(target: targetTensor, change: .wholeTensor(WholeTensorModule(.replace, sourceName: key)),
                                                 tensors: [TensorRole.fullValue: packName]))
                imported.append(ImportedTensor(packName: packName, info: TensorInfo(name: packName, dtype: info.dtype, shape: info.shape)) {
                    try tensors.tensor(key)
                })
            }
        }

        var modules: [AdapterModule] = []
        for target in order {
            let saved = roles[target]!
            var moduleTensors: [String: String] = [:]
            let change: ModuleChange
            func add(_ role: String, shape: [Int]) {
                let key = saved[role]!
                let packName = AdapterModule.tensorName(adapter: name, target: target, role: role)
                moduleTensors[role] = packName
                let dtype = tensors.info(key)!.dtype
                imported.append(ImportedTensor(packName: packName, info: TensorInfo(name: packName, dtype: dtype, shape: shape)) {
                    try tensors.tensor(key).reshaped(shape)
                })
            }
            func shape(_ role: String) -> [Int]? { saved[role].flatMap { tensors.info($0)?.shape } }

            if kind == .vera {
                guard let a = veraShared[TensorRole.loraA], let b = veraShared[TensorRole.loraB] else {
                    throw InputError(file: file, problem: "holds no shared projections (base_model.vera_A, vera_B): with save_projection false PEFT regenerates them from projection_prng_key with torch's generator, which peftpack does not reproduce; save the adapter with save_projection=True", kind: .notExpressible)
                }
                guard let lambdaD = shape(TensorRole.veraLambdaD), let lambdaB = shape(TensorRole.veraLambdaB),
                      lambdaD == [config.rank], lambdaB.count == 1 else {
                    throw InputError(file: file, tensor: saved.values.sorted().first, problem: "\(target): VeRA needs vera_lambda_d [r = \(config.rank)] and vera_lambda_b [out]")
                }
                change = .vera(VeRAModule(layout: ModuleLayoutRule.layout(of: target, modelType: nil), rank: config.rank))
                add(TensorRole.veraLambdaB, shape: lambdaB)
                add(TensorRole.veraLambdaD, shape: lambdaD)
                moduleTensors[TensorRole.loraA] = a
                moduleTensors[TensorRole.loraB] = b
            } else if kind == .adalora {
                guard let module = try PeftAdaLoRAModules.module(target: target, config: config, shapes: saved.mapValues { tensors.info($0)!.shape },
                                                                 file: file, keys: saved) else { continue }
                change = module.change
                for role in saved.keys.sorted() { add(role, shape: module.shapes[role]!) }
            } else if kind == .loha || kind == .lokr {
                let product = try PeftProductModules.module(kind: kind, target: target, config: config, shapes: saved.mapValues { tensors.info($0)!.shape },
                                                            file: file, keys: saved)
                change = product.change
                for role in saved.keys.sorted() { add(role, shape: product.shapes[role]!) }
            } else if kind == .ia3 {
                guard let vectorShape = shape(TensorRole.ia3Vector) else {
                    throw InputError(file: file, tensor: saved.values.first, problem: "has no ia3_l vector for \(target)")
                }
                let feedforward = config.isFeedforward(target)
                guard vectorShape.count == 2, feedforward ? vectorShape[0] == 1 : vectorShape[1] == 1 else {
                    throw InputError(file: file, tensor: saved[TensorRole.ia3Vector], problem: "has shape \(Shape.describe(vectorShape)) but adapter_config.json makes \(target) \(feedforward ? "a feed-forward module, scaled on its input ([1, in])" : "scaled on its output ([out, 1])")")
                }
                change = .ia3(IA3Module(layout: ModuleLayoutRule.layout(of: target, modelType: nil), side: feedforward ? .input : .output))
                add(TensorRole.ia3Vector, shape: [feedforward ? vectorShape[1] : vectorShape[0]])
            } else {
                guard let aShape = shape(TensorRole.loraA), let bShape = shape(TensorRole.loraB) else {
                    let missing = saved[TensorRole.loraA] == nil ? "lora_A" : "lora_B"
                    throw InputError(file: file, problem: "\(target) has no \(missing) tensor")
                }
                let (rank, scale) = config.loraRankAndScale(moduleName: target)
                guard aShape.count == 2, bShape.count == 2 else {
                    throw InputError(file: file, tensor: saved[TensorRole.loraA], problem: "LoRA factors must be matrices")
                }
                guard aShape[0] == rank, bShape[1] == rank else {
                    throw InputError(file: file, tensor: saved[TensorRole.loraA], problem: "adapter_config.json gives \(target) rank \(rank) but lora_A is \(Shape.describe(aShape)) and lora_B is \(Shape.describe(bShape))")
                }
                // PEFT ignores the saved fan_in_fan_out: the module's type decides (ModuleLayoutRule).
                change = .lowRank(LowRankModule(layout: layouts[target] ?? ModuleLayoutRule.layout(of: target, modelType: nil),
                                                rank: rank, scale: scale))
                add(TensorRole.loraA, shape: aShape)
                add(TensorRole.loraB, shape: bShape)
                if let magnitude = shape(TensorRole.magnitude) {
                    guard magnitude == [bShape[0]] else {
                        throw InputError(file: file, tensor: saved[TensorRole.magnitude], problem: "DoRA magnitude has shape \(Shape.describe(magnitude)), expected [\(bShape[0])]")
                    }
                    add(TensorRole.magnitude, shape: magnitude)
                }
                if let bias = shape(TensorRole.loraBBias) { add(TensorRole.loraBBias, shape: bias) }
            }
            if let bias = shape(TensorRole.targetBias) { add(TensorRole.targetBias, shape: bias) }
            modules.append(AdapterModule(target: target, change: change, tensors: moduleTensors))
        }
        try tokenRows.checkAllSaved(file: file)
        guard !modules.isEmpty || !fullModules.isEmpty else {
            throw InputError(file: file, problem: "holds no \(config.peftType) tensors")
        }
        var settings = AdapterSettings()
        if magnitudeSuffix != ".lora_magnitude_vector" { settings.magnitudeKeySuffix = magnitudeSuffix }
        let adapter = Adapter(name: name, kind: kind, source: source, settings: settings, modules: modules + fullModules)
        return ImportedAdapter(adapter: adapter, tensors: imported, leftOut: leftOut)
    }

    static func promptTensor(config: PeftConfig, tensors: TensorSource, file: String) throws -> TensorInfo {
        let extra = tensors.tensorNames.filter { $0 != PeftKeys.promptEmbeddings }
        if let first = extra.first {
            throw InputError(file: file, tensor: first, problem: "is not part of a \(config.peftType) adapter (only prompt_embeddings is)")
        }
        guard let info = tensors.info(PeftKeys.promptEmbeddings) else {
            throw InputError(file: file, problem: "has no prompt_embeddings tensor")
        }
        guard config.numTransformerSubmodules ?? 1 == 1 else {
            throw InputError(file: file, problem: "encoder-decoder prompt learning (num_transformer_submodules > 1) is not supported")
        }
        guard info.shape.count == 2, let tokens = config.numVirtualTokens, info.shape[0] == tokens else {
            throw InputError(file: file, tensor: PeftKeys.promptEmbeddings, problem: "has shape \(Shape.describe(info.shape)) but adapter_config.json says num_virtual_tokens = \(config.numVirtualTokens.map(String.init) ?? "nothing")")
        }
        return info
    }

    static func importPrompt(name: String, config: PeftConfig, source: AdapterSource, tensors: TensorSource, file: String) throws -> ImportedAdapter {
        let info = try promptTensor(config: config, tensors: tensors, file: file)
        if let tokenDim = config.tokenDim, tokenDim != info.shape[1] {
            throw InputError(file: file, tensor: PeftKeys.promptEmbeddings, problem: "has width \(info.shape[1]) but adapter_config.json says token_dim = \(tokenDim)")
        }
        var settings = AdapterSettings()
        settings.numVirtualTokens = info.shape[0]
        settings.tokenDim = info.shape[1]
        let packName = AdapterModule.tensorName(adapter: name, target: "embeddings", role: TensorRole.promptEmbeddings)
        let module = AdapterModule(target: "embeddings", change: .prompt, tensors: [TensorRole.promptEmbeddings: packName])
        let adapter = Adapter(name: name, kind: .prompt, source: source, settings: settings, modules: [module])
        let tensor = ImportedTensor(packName: packName, info: TensorInfo(name: packName, dtype: info.dtype, shape: info.shape)) {
            try tensors.tensor(PeftKeys.promptEmbeddings)
        }
        return ImportedAdapter(adapter: adapter, tensors: [tensor])
    }

    /// PEFT views prompt_embeddings [T, L·2·H·D] as [T, 2L, H, D]; layer l's keys are block 2l and
    /// its values block 2l+1. The pack stores each as [T, H, D].
    static func importPrefix(name: String, config: PeftConfig, source: AdapterSource, tensors: TensorSource, file: String) throws -> ImportedAdapter {
        let info = try promptTensor(config: config, tensors: tensors, file: file)
        guard let layers = config.numLayers, let heads = config.numAttentionHeads, let tokenDim = config.tokenDim,
              layers > 0, heads > 0, tokenDim > 0, tokenDim % heads == 0 else {
            throw InputError(file: file, problem: "prefix tuning config needs num_layers, num_attention_heads and token_dim (a multiple of the heads)")
        }
        let headDim = tokenDim / heads
        let tokens = info.shape[0]
        guard info.shape[1] == layers * 2 * tokenDim else {
            throw InputError(file: file, tensor: PeftKeys.promptEmbeddings, problem: "has width \(info.shape[1]) but num_layers × 2 × token_dim = \(layers * 2 * tokenDim)")
        }
        var settings = AdapterSettings()
        settings.numVirtualTokens = tokens
        settings.numLayers = layers
        settings.numKeyValueHeads = heads
        settings.headDim = headDim
        var modules: [AdapterModule] = []
        var imported: [ImportedTensor] = []
        for layer in 0..<layers {
            let target = "layers.\(layer)"
            var module = AdapterModule(target: target, change: .prefix(layer: layer))
            for (block, role) in [(2 * layer, TensorRole.prefixKeys), (2 * layer + 1, TensorRole.prefixValues)] {
                let packName = AdapterModule.tensorName(adapter: name, target: target, role: role)
                module.tensors[role] = packName
                let shape = [tokens, heads, headDim]
                imported.append(ImportedTensor(packName: packName, info: TensorInfo(name: packName, dtype: info.dtype, shape: shape)) {
                    let whole = try tensors.tensor(PeftKeys.promptEmbeddings)
                    return PrefixLayout.block(of: whole, block: block, blockWidth: tokenDim, shape: shape)
                })
            }
            modules.append(module)
        }
        let adapter = Adapter(name: name, kind: .prefix, source: source, settings: settings, modules: modules)
        return ImportedAdapter(adapter: adapter, tensors: imported)
    }
}

/// Byte-exact moves between PEFT's flat prefix tensor and per-layer key/value blocks.
enum PrefixLayout {
    static func block(of whole: HostTensor, block: Int, blockWidth: Int, shape: [Int]) -> HostTensor {
        let rows = whole.shape[0]
        let rowBytes = whole.shape[1] * whole.dtype.byteSize
        let blockBytes = blockWidth * whole.dtype.byteSize
        var out = [UInt8](repeating: 0, count: rows * blockBytes)
        for row in 0..<rows {
            let from = row * rowBytes + block * blockBytes
            out[(row * blockBytes)..<((row + 1) * blockBytes)] = whole.bytes[from..<(from + blockBytes)]
        }
        return HostTensor(dtype: whole.dtype, shape: shape, bytes: out)
    }

    /// The inverse: blocks in order (layer 0 keys, layer 0 values, layer 1 keys, …) → [T, blocks·width].
    static func join(_ blocks: [HostTensor]) -> HostTensor {
        let rows = blocks[0].shape[0]
        let blockBytes = blocks[0].bytes.count / rows
        var out = [UInt8]()
        out.reserveCapacity(rows * blockBytes * blocks.count)
        for row in 0..<rows {
            for block in blocks {
                out.append(contentsOf: block.bytes[(row * blockBytes)..<((row + 1) * blockBytes)])
            }
        }
        let width = blockBytes / blocks[0].dtype.byteSize * blocks.count
        return HostTensor(dtype: blocks[0].dtype, shape: [rows, width], bytes: out)
    }
}
