import Foundation

extension Merge {
    /// The output of a merge that keeps a bitsandbytes base quantized, as PEFT's `merge_and_unload`
    /// into `Linear4bit` / `Linear8bitLt` followed by `save_pretrained` leaves it: the base's stored
    /// tensors, in its order and shards, untouched ones copied byte for byte (quantized weights with
    /// every companion), each merged quantized weight requantized with its own settings, config.json
    /// keeping its quantization_config.
    ///
    /// The merge is computed first as it is for a dequantized output, in fp32: W + ΔW with ΔW in fp64
    /// and one rounding to fp32, then quantized — PEFT quantizes fp32(fp32(W) + fp32(B·A·s)), where
    /// B·A is an fp32 matmul, so an element lying within those roundings of a decision bound can take
    /// the other code (counted by tests/python/check_quantized_bases.py). A merged tensor the base
    /// stores unquantized is rounded from that fp32 value to its dtype (a second rounding when the
    /// dtype is 16-bit).
    ///
    /// A merged weight whose survival is below the merge's minimum (every merged quantized weight
    /// with `allMerged`) is promoted when asked: written as a plain tensor of the promotion's float
    /// dtype, rounded once from the fp64 merge (not from the fp32 sum, which would round twice),
    /// without its companions, and named in config.json's `llm_int8_skip_modules`
    /// (SkippedModulesConfig) so transformers loads it as a plain Linear.
    enum QuantizedOutput {
        static let scratchName = ".merged-fp32"
        /// Inside the scratch folder: every requantized weight with its companions, read back as
        /// the output will be to measure what survived before deciding what to promote.
        static let requantizedScratchName = "requantized"

        /// Refuses a promotion the output could not hold: a ggml type, or a float dtype other than
        /// the one the base stores its unquantized weights in. transformers 5 loads every float
        /// tensor of a pre-quantized model in its stored dtype whatever `dtype` it is given, so a
        /// BF16 Linear among F32 ones meets F32 activations and its forward fails
        /// (tests/python/check_quantized_bases.py).
        static func check(_ promotion: Promotion, base: BaseModel) throws {
            guard let dtype = promotion.type.floatDType else {
                throw InputError(file: base.folder, problem: "is a bitsandbytes model: merged weights can be promoted out of its quantization to bf16, fp16 or fp32, not \(promotion.precision.rawValue) (a ggml type needs a GGUF base)")
            }
            let checkpoint = base.checkpoint
            let plain = Set(checkpoint.names.compactMap { name -> DType? in
                guard !checkpoint.isQuantized(name), let info = checkpoint.info(name), info.shape.count == 2, info.dtype.isFloatingPoint else { return nil }
                return info.dtype
            })
            if plain.count == 1, let stored = plain.first, stored != dtype {
                throw InputError(file: base.folder, problem: "is a bitsandbytes model whose unquantized weights are \(stored.rawValue): transformers loads a promoted weight in the dtype it is stored in, and a \(dtype.rawValue) Linear among \(stored.rawValue) layers fails on their activations; promote to \(stored.rawValue)")
            }
        }

        /// Returns the tensor bytes written and what survived requantization of each merged
        /// quantized weight, in name order.
        static func write(_ stream: TensorStream, plan: Plan, options: Options, baseFolder: String,
                          into folder: String) throws -> (bytesWritten: Int, survival: [QuantizationSurvival]) {
            let scratch = (folder as NSString).appendingPathComponent(scratchName)
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: false)
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            try stream.write(into: scratch, baseFolder: baseFolder)
            let merged = try Checkpoint(storedAt: scratch)
            let base = plan.base.checkpoint
            let stored = base.stored
            var replacements = try requantized(Set(plan.changes.keys), base: base, merged: merged)
            var survival = try measured(plan.changes.keys.sorted().filter { base.isQuantized($0) }, replacements: replacements,
                                        base: base, merged: merged, scratch: scratch)
            var dropped = Set<String>()
            if let promotion = options.promotion, let dtype = promotion.type.floatDType {
                for index in survival.indices where promotion.allMerged || survival[index].survival < options.minSurvival {
                    let name = survival[index].tensor
                    survival[index].promotedTo = dtype.rawValue
                    let layout = base.dequantizer!.layout(name)!
                    for companion in layout.storedCompanions { replacements[companion] = nil }
                    dropped.formUnion(layout.storedCompanions)
                    replacements[name] = try promoted(name, to: dtype, plan: plan)
                }
            }
            let added = merged.storedNames.filter { stored.info($0) == nil && !base.names.contains($0) }
            let infos = stored.storedNames.filter { !dropped.contains($0) }.map { name in
                replacements[name].map { TensorInfo(name: name, dtype: $0.dtype, shape: $0.shape) } ?? stored.info(name)!
            }
            let addedInfos = added.map { merged.info($0)! }
            var shards: [[TensorInfo]]
            if let maxShardSize = options.maxShardSize {
                shards = CheckpointWriter.planShards(infos + addedInfos, maxShardSize: maxShardSize)
            } else {
                let byName = Dictionary(uniqueKeysWithValues: infos.map { ($0.name, $0) })
                shards = stored.shardFiles.map { file in stored.storedNames.filter { stored.shardOf($0) == file }.compactMap { byName[$0] } }
                shards[shards.count - 1] += addedInfos
                shards.removeAll(where: \.isEmpty)
            }
            let metadata = try stored.storedNames.first.map { try stored.file(forTensor: $0).metadata } ?? nil
            try CheckpointWriter.write(folder: folder, shards: shards, metadata: metadata) { info, sink in
                if let tensor = replacements[info.name] {
                    try tensor.bytes.withUnsafeBytes(sink)
                } else if added.contains(info.name) {
                    try merged.streamBytes(info.name, sink)
                } else {
                    try stored.streamBytes(info.name, sink)
                }
            }
            try copyOtherFiles(from: scratch, to: folder)
            let promotedModules = survival.filter { $0.promotedTo != nil }.map { String($0.tensor.dropLast(".weight".count)) }
            if !promotedModules.isEmpty { try listUnquantized(promotedModules, base: plan.base, in: folder) }
            return (shards.joined().reduce(0) { $0 + ($1.byteCount ?? 0) }, survival)
        }

        /// Every changed tensor's stored replacements: a quantized weight's requantized group, any
        /// other tensor the fp32 merge in its stored dtype.
        static func requantized(_ changed: Set<String>, base: Checkpoint, merged: Checkpoint) throws -> [String: HostTensor] {
            let stored = base.stored
            var replacements: [String: HostTensor] = [:]
            for name in changed.sorted() {
                let values: HostTensor = try merged.tensor(name)
                if let layout = base.dequantizer?.layout(name) {
                    for (storedName, tensor) in try BitsandbytesRequantizer.tensors(for: layout, values: values.floats(), stored: stored) {
                        replacements[storedName] = tensor
                    }
                } else if let info = stored.info(name) {
                    replacements[name] = values.dtype == info.dtype ? values : HostTensor(floats: values.floats(), shape: info.shape, dtype: info.dtype)
                }
            }
            return replacements
        }

        /// What survived of each requantized weight, from its group written to the scratch folder
        /// and read back through bitsandbytes' dequantization, as the output will be read.
        private static func measured(_ names: [String], replacements: [String: HostTensor], base: Checkpoint, merged: Checkpoint,
                                     scratch: String) throws -> [QuantizationSurvival] {
            guard !names.isEmpty else { return [] }
            let folder = (scratch as NSString).appendingPathComponent(requantizedScratchName)
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
            let group = names.flatMap { name in [name] + base.dequantizer!.layout(name)!.storedCompanions }
            let infos = group.map { TensorInfo(name: $0, dtype: replacements[$0]!.dtype, shape: replacements[$0]!.shape) }
            try CheckpointWriter.write(folder: folder, shards: [infos], metadata: nil) { info, sink in
                try replacements[info.name]!.bytes.withUnsafeBytes(sink)
            }
            let requantized = try Checkpoint(path: folder)
            return try names.map { name in
                try QuantizationSurvival.measure(name, base: base, requantized: requantized, merged: try merged.tensor(name).floats())
            }
        }

        /// A promoted weight: the base's dequantized weight and every change folded in fp64, then
        /// rounded once to `dtype`.
        private static func promoted(_ name: String, to dtype: DType, plan: Plan) throws -> HostTensor {
            let checkpoint = plan.base.checkpoint
            let info = checkpoint.info(name)!
            return try Merge.fold(plan.changes[name]!.operations, into: checkpoint.tensor(name), stored: info,
                                  output: TensorInfo(name: name, dtype: dtype, shape: info.shape),
                                  readers: plan.readers, owners: plan.owners, selected: plan.selected).result
        }

        /// Names the promoted modules in the output's config.json, after the modules transformers
        /// would have kept unquantized by default when the base lists none.
        private static func listUnquantized(_ modules: [String], base: BaseModel, in folder: String) throws {
            let path = (folder as NSString).appendingPathComponent("config.json")
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw InputError(file: path, problem: "is missing: the modules promoted out of the bitsandbytes quantization must be listed in its quantization_config")
            }
            let listed = try SkippedModulesConfig.listed(in: text, file: path) ?? defaultUnquantizedModules(base)
            let entries = listed + modules.filter { !listed.contains($0) }
            let promoted = Set(modules)
            let quantized = (base.checkpoint.dequantizer?.quantizedNames ?? []).map { String($0.dropLast(".weight".count)) }
            try SkippedModulesConfig.check(entries, quantizedModules: quantized.filter { !promoted.contains($0) }, file: path)
            try SkippedModulesConfig.setting(entries, in: text).write(toFile: path, atomically: false, encoding: .utf8)
        }

        /// The modules transformers keeps unquantized when `llm_int8_skip_modules` is null, as this
        /// checkpoint shows them: every 2-D float weight stored unquantized but the family's
        /// embeddings (never converted, so never listed), and a tied head it does not store.
        static func defaultUnquantizedModules(_ base: BaseModel) -> [String] {
            let checkpoint = base.checkpoint
            let embeddings = Set(base.family.map { family in
                [family.tokenEmbeddingWeight] + family.otherEmbeddings.map { "\(family.checkpointPrefix).\($0).weight" }
            } ?? [])
            var modules = checkpoint.names.filter { name in
                guard name.hasSuffix(".weight"), !checkpoint.isQuantized(name), !embeddings.contains(name),
                      let info = checkpoint.info(name) else { return false }
                return info.shape.count == 2 && info.dtype.isFloatingPoint
            }
            if let tie = base.tie, checkpoint.info(tie.head) == nil { modules.append(tie.head) }
            return modules.map { String($0.dropLast(".weight".count)) }
        }
    }
}

private extension QuantizedWeightLayout {
    /// Every stored tensor of the weight but the weight itself, a 4-bit weight's quant state included.
    var storedCompanions: [String] {
        switch self {
        case .fourBit(let weight): weight.companions + [weight.stateName]
        case .int8: companions
        }
    }
}
