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
        /// Inside the output folder while it is written: the spilled replacement tensors.
        static let scratchName = ".requantized"

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
        ///
        /// Two passes, memory flat in model size: every computed tensor first (merged quantized
        /// weights on all cores, each dequantized once for its content check, its merge and its
        /// survival), its replacements spilled to a scratch file, since the safetensors header
        /// needs their sizes; then the output, in the base's shards and order, from the spill and
        /// the base's own bytes.
        static func write(_ stream: TensorStream, plan: Plan, options: Options, baseFolder: String,
                          into folder: String) throws -> (bytesWritten: Int, survival: [QuantizationSurvival]) {
            let scratch = (folder as NSString).appendingPathComponent(scratchName)
            defer { POSIX.unlink(scratch) }
            let spill = try SpilledTensors(path: scratch)
            let base = plan.base.checkpoint
            let stored = base.stored
            let computed = plan.outputInfos.filter { plan.changes[$0.name] != nil || plan.tied?.outputs[$0.name] != nil || stored.info($0.name) == nil && !base.names.contains($0.name) }
            if let first = plan.binding.pendingTensors.first { try plan.binding.checkContent(first) }
            var survival: [QuantizationSurvival] = []
            var dropped = Set<String>()
            let workers = Cores.active
            // The disk reads the weights the next workers take while these compute.
            for info in computed.prefix(2 * workers) { stored.prefetch(info.name) }
            // …and the tensors copied afterwards, so the copy reads them from memory.
            let computedNames = Set(computed.map(\.name))
            for name in stored.storedNames where !computedNames.contains(name) { stored.prefetch(name) }
            try OrderedParallel.forEach(count: computed.count, workers: workers, work: { index -> Requantized? in
                if index + 2 * workers < computed.count { stored.prefetch(computed[index + 2 * workers].name) }
                let info = computed[index]
                guard plan.tied?.outputs[info.name] == nil, let layout = base.dequantizer?.layout(info.name) else { return nil }
                defer { stored.releasePages(info.name) }
                return try requantized(info, layout: layout, stream: stream, plan: plan, options: options)
            }, emit: { index, result in
                let info = computed[index]
                if let result {
                    try plan.binding.checkContent(info.name, hash: result.contentHash)
                    stream.record(result.folded)
                    stream.recordRead(base.info(info.name)?.byteCount ?? 0)
                    for (name, tensor) in result.tensors { try spill.append(name, tensor) }
                    survival.append(result.survival)
                    dropped.formUnion(result.dropped)
                } else {
                    // A tensor the base stores unquantized (or a head an untied pair adds): the fp32
                    // merge, rounded to the dtype the base stores it in.
                    let merged = HostTensor(dtype: info.dtype, shape: info.shape, bytes: try stream.computedBytes(info))
                    let dtype = stored.info(info.name)?.dtype ?? info.dtype
                    try spill.append(info.name, merged.dtype == dtype ? merged : HostTensor(floats: merged.floats(), shape: info.shape, dtype: dtype))
                }
                stream.reportProgress(index + 1, of: computed.count)
            })
            try plan.binding.checkRemainingContent()
            let added = computed.map(\.name).filter { stored.info($0) == nil }
            let infos = stored.storedNames.filter { !dropped.contains($0) }.map { spill.info($0) ?? stored.info($0)! }
            let addedInfos = added.map { spill.info($0)! }
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
                if spill.info(info.name) != nil {
                    try spill.withBytes(info.name, sink)
                } else {
                    stream.recordRead(info.byteCount ?? 0)
                    try stored.streamBytes(info.name, sink)
                    stored.releasePages(info.name)
                }
            }
            try copyOtherFiles(from: baseFolder, to: folder)
            if plan.tied?.untie == true { try TiedMerge.untieConfig(in: folder) }
            survival.sort { $0.tensor < $1.tensor }
            let promotedModules = survival.filter { $0.promotedTo != nil }.map { String($0.tensor.dropLast(".weight".count)) }
            if !promotedModules.isEmpty { try listUnquantized(promotedModules, base: plan.base, in: folder) }
            return (shards.joined().reduce(0) { $0 + ($1.byteCount ?? 0) }, survival)
        }

        /// One merged quantized weight's replacement tensors and what survived.
        struct Requantized {
            var tensors: [(String, HostTensor)]
            var survival: QuantizationSurvival
            /// The fp32 merge's counts (its values dropped).
            var folded: FoldedTensor
            /// XXH3 of the base's dequantized weight, for the pack's content check.
            var contentHash: String
            /// Stored companions a promotion leaves out.
            var dropped: [String]
        }

        /// The base's weight dequantized once, merged in fp32, requantized with its own settings
        /// (BitsandbytesRequantizer) and read back as the output will be; promoted instead when it
        /// survived too little and a promotion was asked for.
        private static func requantized(_ info: TensorInfo, layout: QuantizedWeightLayout, stream: TensorStream, plan: Plan,
                                        options: Options) throws -> Requantized {
            let checkpoint = plan.base.checkpoint
            let name = info.name
            let logical = checkpoint.info(name)!
            let original: HostTensor = try checkpoint.tensor(name)
            let contentHash = original.bytes.withUnsafeBytes { XXH3.hex(XXH3.hash64($0)) }
            let before = original.floats()
            var folded = try stream.merged(info, stored: logical, base: original)
            let merged = folded.result.floats()
            folded.result = HostTensor(dtype: .f32, shape: [0], bytes: [])
            let weights = checkpoint.decoded as! BitsandbytesWeights
            var tensors = try BitsandbytesRequantizer.tensors(for: layout, values: merged, stored: checkpoint.stored)
            let after = try weights.dequantized(name, from: tensors)
            var measured = try checkpoint.stored.withBytes(name) { oldCodes in
                QuantizationSurvival.measure(name, layout: layout, before: before, merged: merged, after: after, oldCodes: oldCodes,
                                             newCodes: tensors.first { $0.0 == name }!.1.bytes)
            }
            var dropped: [String] = []
            if let promotion = options.promotion, let dtype = promotion.type.floatDType,
               promotion.allMerged || measured.survival < options.minSurvival {
                measured.promotedTo = dtype.rawValue
                dropped = layout.storedCompanions
                tensors = [(name, try promoted(name, to: dtype, original: original, plan: plan))]
            }
            return Requantized(tensors: tensors, survival: measured, folded: folded, contentHash: contentHash, dropped: dropped)
        }

        /// A promoted weight: the base's dequantized weight and every change folded in fp64, then
        /// rounded once to `dtype`.
        private static func promoted(_ name: String, to dtype: DType, original: HostTensor, plan: Plan) throws -> HostTensor {
            let info = plan.base.checkpoint.info(name)!
            return try Merge.fold(plan.changes[name]!.operations, into: original, stored: info,
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
