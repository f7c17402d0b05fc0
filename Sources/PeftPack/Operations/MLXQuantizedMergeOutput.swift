import Foundation

extension Merge {
    /// `merge --dtype same` into an MLX-quantized base: an MLX model folder like the base (its
    /// config.json, `quantization` entry included, and other files as they are; its tensors in its
    /// order and shards, untouched ones byte for byte) in which each merged quantized weight is the
    /// fp64 merge rounded once to fp32 and quantized as mx.quantize does with the layer's own mode,
    /// group size and bits (AffineQuantizer, scales and biases in the base's dtype; a float mode's
    /// codes and uint8 scales by FloatBlockQuantizer), with what survived measured
    /// (QuantizationSurvival). mlx_lm.fuse quantizes `bf16(dequantized) + bf16(ΔW)`
    /// instead, rounding twice before quantizing (README). A promoted layer is written as a dense
    /// `weight` in the promoted dtype without `scales` and `biases`, and `false` for its module in
    /// config.json's `quantization` (MLXDenseModules), so mlx-lm loads it as a plain Linear.
    enum MLXQuantizedOutput {
        static func write(plan: Plan, weights: MLXQuantizedWeights, options: Options, baseFolder: String,
                          into folder: String) throws -> GGUFOutput.Result {
            if let head = plan.tied?.addedHead {
                throw InputError(file: baseFolder, problem: "ties its head to embed_tokens and the adapters change \(head.name) and the embedding differently; writing an untied quantized MLX model is not supported yet: merge keeping the tie, or to a dequantized model")
            }
            let stored = weights.checkpoint, logical = plan.base.checkpoint
            // Replacements wait in a scratch file for the header (sizes known only once made).
            let scratch = (folder as NSString).appendingPathComponent(QuantizedOutput.scratchName)
            defer { POSIX.unlink(scratch) }
            let spill = try SpilledTensors(path: scratch)
            let stream = TensorStream(plan, progress: nil)
            // A promoted layer's scales and biases are left out.
            var dropped = Set<String>()
            var result = GGUFOutput.Result(bytesWritten: 0, survival: [], changed: Array(repeating: 0, count: plan.selected.count),
                                           lost: Array(repeating: 0, count: plan.selected.count))
            if let first = plan.binding.pendingTensors.first { try plan.binding.checkContent(first) }
            let names = logical.names.filter { plan.changes[$0] != nil || plan.tied?.outputs[$0] != nil }
            try OrderedParallel.forEach(count: names.count, workers: Cores.active, work: { index in
                try merged(names[index], plan: plan, stream: stream, weights: weights, options: options)
            }, emit: { _, merged in
                try plan.binding.checkContent(merged.name, hash: merged.contentHash)
                result.maxAbsDelta = max(result.maxAbsDelta, merged.folded.largest)
                for adapter in merged.folded.adapters {
                    result.changed[adapter] += merged.folded.changed
                    result.lost[adapter] += merged.folded.lost
                }
                for (name, tensor) in merged.tensors { try spill.append(name, tensor) }
                if let survival = merged.survival { result.survival.append(survival) }
                dropped.formUnion(merged.dropped)
            })
            try plan.binding.checkRemainingContent()
            let shards = stored.shardFiles.map { file in
                stored.storedNames.filter { stored.shardOf($0) == file && !dropped.contains($0) }.map { name in
                    spill.info(name) ?? stored.info(name)!
                }
            }.filter { !$0.isEmpty }
            let metadata = try stored.storedNames.first.flatMap { try stored.metadata(ofFileHolding: $0) }
            try CheckpointWriter.write(folder: folder, shards: shards, metadata: metadata) { info, sink in
                result.bytesWritten += info.byteCount ?? 0
                if spill.info(info.name) != nil { return try spill.withBytes(info.name, sink) }
                try stored.streamBytes(info.name, sink)
            }
            try copyOtherFiles(from: baseFolder, to: folder)
            let promoted = result.survival.filter { $0.promotedTo != nil }.map { String($0.tensor.dropLast(".weight".count)) }.sorted()
            if !promoted.isEmpty { try markUnquantized(promoted, in: folder) }
            result.survival.sort { $0.tensor < $1.tensor }
            return result
        }

        private static func markUnquantized(_ modules: [String], in folder: String) throws {
            let path = (folder as NSString).appendingPathComponent("config.json")
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return }
            try MLXDenseModules.markingUnquantized(modules, in: text).write(toFile: path, atomically: false, encoding: .utf8)
        }

        /// One merged tensor's replacements and what survived.
        private struct Merged {
            var name: String
            var tensors: [(String, HostTensor)]
            var survival: QuantizationSurvival?
            /// The merge's counts (its values dropped).
            var folded: FoldedTensor
            /// XXH3 of the base's (dequantized) tensor, for the pack's content check.
            var contentHash: String
            var dropped: [String]
        }

        /// The base tensor read (dequantized) once for its content check, its merge and its
        /// survival. A tensor stored unquantized (a norm, a layer mlx-lm left dense) keeps its
        /// dtype, rounded once from the fp64 merge; a quantized one is quantized from fp32.
        private static func merged(_ name: String, plan: Plan, stream: TensorStream, weights: MLXQuantizedWeights,
                                   options: Options) throws -> Merged {
            let logical = plan.base.checkpoint, stored = weights.checkpoint
            let info = logical.info(name)!
            let original: HostTensor = try logical.tensor(name)
            let contentHash = original.bytes.withUnsafeBytes { XXH3.hex(XXH3.hash64($0)) }
            let layout = weights.layout(name)
            var folded = try mergedValues(name, info: info, original: original, stream: stream, plan: plan, as: layout == nil ? info.dtype : .f32)
            guard let layout else {
                return Merged(name: name, tensors: [(name, folded.result)], folded: folded, contentHash: contentHash, dropped: [])
            }
            let merged = folded.result.floats()
            folded.result = HostTensor(dtype: .f32, shape: [0], bytes: [])
            let quantized = weights.quantized(name, values: merged)!
            let base = original.floats()
            let after = weights.dequantized(name, from: quantized)
            var unchanged = 0
            for index in base.indices where base[index] == after[index] { unchanged += 1 }
            var measured = QuantizationSurvival(tensor: name, type: layout.typeName, before: base, merged: merged, after: after, unchanged: unchanged)
            if let promotion = options.promotion, promotion.allMerged || measured.survival < options.minSurvival {
                let dtype = promotion.precision.mlxDType!
                measured.promotedTo = dtype.rawValue.lowercased()
                // Rounded once from the fp64 merge, as an unquantized output is.
                let promoted = try mergedValues(name, info: info, original: original, stream: stream, plan: plan, as: dtype).result
                return Merged(name: name, tensors: [(name, promoted)], survival: measured, folded: folded, contentHash: contentHash,
                              dropped: layout.companions)
            }
            let packed = stored.info(name)!, scales = stored.info(layout.scales)!
            var tensors = [(name, HostTensor(dtype: .u32, shape: packed.shape, bytes: quantized.codes)),
                           (layout.scales, HostTensor(dtype: scales.dtype, shape: scales.shape, bytes: quantized.scales))]
            if let biases = layout.biases, let values = quantized.biases {
                let info = stored.info(biases)!
                tensors.append((biases, HostTensor(dtype: info.dtype, shape: info.shape, bytes: values)))
            }
            return Merged(name: name, tensors: tensors, survival: measured, folded: folded, contentHash: contentHash, dropped: [])
        }

        /// A merged tensor in `dtype`: the fp64 merge rounded once (a tie's plan computes its own
        /// in fp32, which a narrower dtype rounds a second time).
        private static func mergedValues(_ name: String, info: TensorInfo, original: HostTensor, stream: TensorStream, plan: Plan,
                                         as dtype: DType) throws -> FoldedTensor {
            if var tied = plan.tied?.outputs[name] {
                if tied.result.dtype != dtype { tied.result = HostTensor(floats: tied.result.floats(), shape: info.shape, dtype: dtype) }
                return tied
            }
            return try stream.merged(TensorInfo(name: name, dtype: dtype, shape: info.shape), stored: info, base: original)
        }

        /// A promotion MLX can hold: a dense float layer.
        static func check(_ promotion: Promotion, base: String) throws {
            guard promotion.precision.mlxDType != nil else {
                throw InputError(file: base, problem: "is an MLX-quantized model: merged weights can be promoted to bf16, f16 or f32 (a dense layer mlx-lm loads), not \(promotion.precision.rawValue)")
            }
        }
    }
}

extension Promotion.Precision {
    /// The dense dtype an MLX model holds a promoted layer in.
    var mlxDType: DType? {
        switch self {
        case .bf16: .bf16
        case .f16: .f16
        case .f32: .f32
        case .q8_0: nil
        }
    }
}
