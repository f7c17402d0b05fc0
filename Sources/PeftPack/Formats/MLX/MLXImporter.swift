import Foundation

/// An mlx-lm adapter folder as a pack adapter. LoRA and DoRA: lora_a [in, r] and lora_b [r, out]
/// transposed into PEFT's A [r, in] and B [out, r] (an exact rearrangement; an embedding's
/// lora_a [vocab, r] and lora_b [r, dim] become PEFT's lora_embedding_A [r, vocab] and B [dim, r]
/// the same way), `m` kept as DoRA's magnitude, and the config's one rank and scale on every
/// module. A full fine-tune: each saved parameter replaces the base's (MLXFullFineTune). With the
/// base, each tensor must sit where mlx-lm's load_adapters puts it (a `keys` module in the last
/// num_layers layers, or a root module named in `keys`) and match the base weight; the rest is
/// refused, as mlx-lm refuses it.
public enum MLXImporter {
    public static func importAdapter(folder: String, name: String?, base: BaseModel?) throws -> ImportedAdapter {
        let configPath = (folder as NSString).appendingPathComponent(MLXAdapterFormat.configFile)
        let weightsPath = (folder as NSString).appendingPathComponent(MLXAdapterFormat.weightsFile)
        let configText: String
        do {
            configText = try String(contentsOfFile: configPath, encoding: .utf8)
        } catch {
            throw InputError(file: configPath, problem: "cannot be read as UTF-8 text")
        }
        let config = try MLXAdapterConfig(text: configText, file: configPath)
        guard FileManager.default.fileExists(atPath: weightsPath) else {
            throw InputError(file: folder, problem: "has an MLX adapter_config.json but no \(MLXAdapterFormat.weightsFile)")
        }
        let weights = try SafetensorsFile(path: weightsPath)
        let placement = try base.map { try Placement(config: config, base: $0, file: configPath) }
        let adapterName = name ?? "default"
        let source = AdapterSource(format: AdapterSourceKind.mlx.rawValue, configText: configText)
        guard let parameters = config.lowRank else {
            return try MLXFullFineTune.importAdapter(weights, file: weightsPath, name: adapterName, source: source, base: base)
        }
        let isDoRA = config.fineTuneType == .dora

        var roles: [String: [String: String]] = [:]
        for key in weights.names.sorted() {
            let suffixes = [(MLXAdapterFormat.loraA, TensorRole.loraA), (MLXAdapterFormat.loraB, TensorRole.loraB), (MLXAdapterFormat.magnitude, TensorRole.magnitude)]
            guard let (suffix, role) = suffixes.first(where: { key.hasSuffix($0.0) }) else {
                throw InputError(file: weightsPath, tensor: key, problem: "is not an MLX adapter parameter (lora_a, lora_b or m)")
            }
            if role == TensorRole.magnitude && !isDoRA {
                throw InputError(file: weightsPath, tensor: key, problem: "is a DoRA magnitude but adapter_config.json says fine_tune_type \(config.fineTuneType.rawValue)")
            }
            roles[String(key.dropLast(suffix.count)), default: [:]][role] = key
        }
        guard !roles.isEmpty else { throw InputError(file: weightsPath, problem: "holds no lora_a/lora_b tensors") }

        var modules: [AdapterModule] = []
        var tensors: [ImportedTensor] = []
        let rank = parameters.rank
        for module in roles.keys.sorted(by: { $0.localizedStandardCompare($1) == .orderedAscending }) {
            let saved = roles[module]!
            guard let aKey = saved[TensorRole.loraA], let bKey = saved[TensorRole.loraB],
                  let a = weights.info(aKey), let b = weights.info(bKey) else {
                throw InputError(file: weightsPath, problem: "module \(module) lacks \(saved[TensorRole.loraA] == nil ? "lora_a" : "lora_b")")
            }
            guard a.shape.count == 2, b.shape.count == 2, a.shape[1] == rank, b.shape[0] == rank else {
                throw InputError(file: weightsPath, tensor: aKey, problem: "module \(module) has lora_a \(Shape.describe(a.shape)) and lora_b \(Shape.describe(b.shape)), but adapter_config.json gives rank \(rank) ([in, r] and [r, out])")
            }
            let inputs = a.shape[0], out = b.shape[1]
            if isDoRA && saved[TensorRole.magnitude] == nil {
                throw InputError(file: weightsPath, problem: "DoRA module \(module) has no \(module)\(MLXAdapterFormat.magnitude) magnitude")
            }
            if let m = saved[TensorRole.magnitude], weights.info(m)?.shape != [out] {
                throw InputError(file: weightsPath, tensor: m, problem: "has shape \(Shape.describe(weights.info(m)!.shape)), expected [\(out)] (lora_b's output features)")
            }
            let site = try placement?.site(of: module, inputs: inputs, out: out, file: weightsPath)
                ?? Site(target: module, layout: MLXAdapterFormat.isTokenEmbedding(module) ? .embedding : .linear, tiedHead: nil)
            if site.layout == .embedding && isDoRA {
                throw InputError(file: weightsPath, problem: "module \(module) is a DoRA embedding: mlx-lm's DoRAEmbedding normalises each token's row, PEFT's DoRA each feature, so peftpack cannot hold it", kind: .notExpressible)
            }

            func add(_ role: String, key: String, to target: String, shape: [Int], transposed: Bool, into moduleTensors: inout [String: String]) {
                let packName = AdapterModule.tensorName(adapter: adapterName, target: target, role: role)
                moduleTensors[role] = packName
                let dtype = weights.info(key)!.dtype
                tensors.append(ImportedTensor(packName: packName, info: TensorInfo(name: packName, dtype: dtype, shape: shape)) {
                    let stored = try weights.tensor(key)
                    return transposed ? stored.transposedMatrix() : stored
                })
            }
            var moduleTensors: [String: String] = [:]
            add(TensorRole.loraA, key: aKey, to: site.target, shape: [rank, inputs], transposed: true, into: &moduleTensors)
            add(TensorRole.loraB, key: bKey, to: site.target, shape: [out, rank], transposed: true, into: &moduleTensors)
            if let m = saved[TensorRole.magnitude] { add(TensorRole.magnitude, key: m, to: site.target, shape: [out], transposed: false, into: &moduleTensors) }
            modules.append(AdapterModule(target: site.target, change: .lowRank(LowRankModule(layout: site.layout, rank: rank, scale: parameters.scale)),
                                         tensors: moduleTensors))
            if let head = site.tiedHead {
                // The tied head is embed_tokens.as_linear: x·(E + scale·a·b)ᵀ, a linear LoRA with
                // PEFT's A = b [r, dim] and B = a [vocab, r], the tensors as saved (PEFT's
                // ensure_weight_tying stores the same pair).
                var headTensors: [String: String] = [:]
                add(TensorRole.loraA, key: bKey, to: head, shape: [rank, out], transposed: false, into: &headTensors)
                add(TensorRole.loraB, key: aKey, to: head, shape: [inputs, rank], transposed: false, into: &headTensors)
                modules.append(AdapterModule(target: head, change: .lowRank(LowRankModule(layout: .linear, rank: rank, scale: parameters.scale)),
                                             tensors: headTensors))
            }
        }
        let adapter = Adapter(name: adapterName, kind: .lora, source: source, modules: modules)
        return ImportedAdapter(adapter: adapter, tensors: tensors)
    }

    /// Where a saved module lands in the pack: its target, its layout and, for the embedding of a
    /// tied base, the head module that shares it.
    struct Site {
        var target: String
        var layout: WeightLayout
        var tiedHead: String?
    }

    /// Where mlx-lm's linear_to_lora_layers puts LoRA layers on this base: the `keys` (default:
    /// every module) of the last num_layers layers, and `keys` naming a module from the root.
    struct Placement {
        let base: BaseModel
        let family: Architecture
        let keys: Set<String>?
        let firstLayer: Int

        init(config: MLXAdapterConfig, base: BaseModel, file: String) throws {
            guard let family = base.family, MLXAdapterFormat.modelTypes.contains(family.modelType) else {
                let supported = MLXAdapterFormat.modelTypes.sorted().joined(separator: ", ")
                throw InputError(file: base.folder, problem: "is a \(base.identity.modelType ?? "unknown") model; peftpack reads MLX adapters for model types \(supported)", kind: .notExpressible)
            }
            guard let total = base.identity.numLayers else {
                throw InputError(file: base.folder, problem: "config.json gives no num_hidden_layers, which the adapter's num_layers counts from")
            }
            guard config.numLayers <= total else {
                throw InputError(file: file, problem: "has num_layers \(config.numLayers) but the base at \(base.folder) has \(total) layers")
            }
            self.base = base
            self.family = family
            keys = config.lowRank?.keys
            firstLayer = config.numLayers > 0 ? total - config.numLayers : 0
        }

        /// lora_a [inputs, r] and lora_b [r, out]: a linear weight [out, inputs], or the token
        /// embedding [inputs = vocab, out = dim].
        func site(of module: String, inputs: Int, out: Int, file: String) throws -> Site {
            if let (layer, suffix) = family.layerPosition(of: module) {
                guard layer >= firstLayer else {
                    throw InputError(file: file, problem: "module \(module) is in layer \(layer), before the last num_layers layers (from \(firstLayer)) where mlx-lm puts the adapter")
                }
                guard keys?.contains(suffix) ?? true else {
                    throw InputError(file: file, problem: "module \(module) is not among lora_parameters.keys, so mlx-lm would not load it")
                }
            } else if keys?.contains(module) != true {
                throw InputError(file: file, problem: "module \(module) is outside the model's layers and not named in lora_parameters.keys, so mlx-lm would not load it")
            }
            if let tie = base.tie, module + ".weight" == tie.head {
                throw InputError(file: file, problem: "module \(module) adapts the head, but the base at \(base.folder) ties it to \(tie.embedding), so mlx-lm's model has no \(module) to adapt")
            }
            guard let resolved = base.resolve(module + ".weight"), let shape = base.info(resolved)?.shape else {
                throw InputError(file: file, problem: "module \(module) is not in the base at \(base.folder)")
            }
            let target = String(resolved.dropLast(".weight".count))
            if resolved == family.tokenEmbeddingWeight {
                guard shape == [inputs, out] else {
                    throw InputError(file: file, problem: "module \(module) implies a \(inputs)×\(out) embedding but the base's \(resolved) is \(Shape.describe(shape))")
                }
                let head = base.tie.map { String($0.head.dropLast(".weight".count)) }
                return Site(target: target, layout: .embedding, tiedHead: head)
            }
            guard family.layerModule(at: resolved)?.layout ?? .linear == .linear, shape == [out, inputs] else {
                throw InputError(file: file, problem: "module \(module) implies a \(out)×\(inputs) linear weight but the base's \(resolved) is \(Shape.describe(shape))")
            }
            return Site(target: target, layout: .linear, tiedHead: nil)
        }
    }
}

extension HostTensor {
    /// A 2-D tensor's transpose, moving elements as bytes (exact in any dtype).
    func transposedMatrix() -> HostTensor {
        let rows = shape[0], columns = shape[1], size = dtype.byteSize
        var out = [UInt8](repeating: 0, count: bytes.count)
        bytes.withUnsafeBufferPointer { from in
            out.withUnsafeMutableBufferPointer { to in
                for row in 0..<rows {
                    for column in 0..<columns {
                        let source = (row * columns + column) * size, destination = (column * rows + row) * size
                        for byte in 0..<size { to[destination + byte] = from[source + byte] }
                    }
                }
            }
        }
        return HostTensor(dtype: dtype, shape: [columns, rows], bytes: out)
    }
}
