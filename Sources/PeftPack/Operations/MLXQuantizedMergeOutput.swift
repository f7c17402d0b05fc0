import Foundation

extension Merge {
    /// `merge --dtype same` into an MLX-quantized base: an MLX model folder like the base (its
    /// config.json, `quantization` entry included, and other files as they are; its tensors in its
    /// order and shards, untouched ones byte for byte) in which each merged quantized weight is the
    /// fp64 merge rounded once to fp32 and quantized as mx.quantize does with the layer's own group
    /// size and bits (AffineQuantizer; scales and biases in the base's dtype), with what survived
    /// measured (QuantizationSurvival). mlx_lm.fuse quantizes `bf16(dequantized) + bf16(ΔW)`
    /// instead, rounding twice before quantizing (README). A promoted layer is written as a dense
    /// `weight` in the promoted dtype without `scales` and `biases`: mlx-lm's loader quantizes a
    /// layer only when its scales are stored, so it loads as a plain Linear.
    enum MLXQuantizedOutput {
        static func write(plan: Plan, weights: MLXQuantizedWeights, options: Options, baseFolder: String,
                          into folder: String) throws -> GGUFOutput.Result {
            if let head = plan.tied?.addedHead {
                throw InputError(file: baseFolder, problem: "ties its head to embed_tokens and the adapters change \(head.name) and the embedding differently; writing an untied quantized MLX model is not supported yet: merge keeping the tie, or to a dequantized model")
            }
            let stored = weights.checkpoint, logical = plan.base.checkpoint
            var replacements: [String: HostTensor] = [:]
            // A promoted layer's scales and biases are left out.
            var dropped = Set<String>()
            var result = GGUFOutput.Result(bytesWritten: 0, survival: [], changed: Array(repeating: 0, count: plan.selected.count),
                                           lost: Array(repeating: 0, count: plan.selected.count))
            if let first = plan.binding.pendingTensors.first { try plan.binding.checkContent(first) }
            for name in logical.names where plan.changes[name] != nil || plan.tied?.outputs[name] != nil {
                try plan.binding.checkContent(name)
                let info = logical.info(name)!
                let layout = weights.layout(name)
                // A tensor stored unquantized (a norm, a layer mlx-lm left dense) keeps its dtype,
                // rounded once from the fp64 merge; a quantized one is quantized from fp32.
                let folded = try mergedValues(name, info: info, plan: plan, as: layout == nil ? info.dtype : .f32)
                result.maxAbsDelta = max(result.maxAbsDelta, folded.largest)
                for adapter in folded.adapters {
                    result.changed[adapter] += folded.changed
                    result.lost[adapter] += folded.lost
                }
                let merged = folded.result.floats()
                guard let layout, let quantized = weights.quantized(name, values: merged) else {
                    replacements[name] = folded.result
                    continue
                }
                let base = try logical.tensor(name).floats()
                let after = try weights.requantized(name, values: merged)!
                var unchanged = 0
                for index in base.indices where base[index] == after[index] { unchanged += 1 }
                var measured = QuantizationSurvival(tensor: name, type: layout.typeName, before: base, merged: merged, after: after, unchanged: unchanged)
                if let promotion = options.promotion, promotion.allMerged || measured.survival < options.minSurvival {
                    let dtype = promotion.precision.mlxDType!
                    measured.promotedTo = dtype.rawValue.lowercased()
                    // Rounded once from the fp64 merge, as an unquantized output is.
                    replacements[name] = try mergedValues(name, info: info, plan: plan, as: dtype).result
                    dropped.formUnion(layout.companions)
                } else {
                    let packed = stored.info(name)!, scales = stored.info(layout.scales)!
                    replacements[name] = HostTensor(dtype: .u32, shape: packed.shape, bytes: quantized.codes)
                    replacements[layout.scales] = HostTensor(dtype: scales.dtype, shape: scales.shape, bytes: quantized.scales)
                    replacements[layout.biases] = HostTensor(dtype: scales.dtype, shape: scales.shape, bytes: quantized.biases)
                }
                result.survival.append(measured)
            }
            try plan.binding.checkRemainingContent()
            let shards = stored.shardFiles.map { file in
                stored.storedNames.filter { stored.shardOf($0) == file && !dropped.contains($0) }.map { name in
                    replacements[name].map { TensorInfo(name: name, dtype: $0.dtype, shape: $0.shape) } ?? stored.info(name)!
                }
            }.filter { !$0.isEmpty }
            let metadata = try stored.storedNames.first.flatMap { try stored.metadata(ofFileHolding: $0) }
            try CheckpointWriter.write(folder: folder, shards: shards, metadata: metadata) { info, sink in
                result.bytesWritten += info.byteCount ?? 0
                if let replacement = replacements[info.name] { return try replacement.bytes.withUnsafeBytes(sink) }
                try stored.streamBytes(info.name, sink)
            }
            try copyOtherFiles(from: baseFolder, to: folder)
            result.survival.sort { $0.tensor < $1.tensor }
            return result
        }

        /// A merged tensor in `dtype`: the fp64 fold rounded once (a tie's plan computes its own
        /// in fp32, which a narrower dtype rounds a second time).
        private static func mergedValues(_ name: String, info: TensorInfo, plan: Plan, as dtype: DType) throws -> FoldedTensor {
            if var tied = plan.tied?.outputs[name] {
                if tied.result.dtype != dtype { tied.result = HostTensor(floats: tied.result.floats(), shape: info.shape, dtype: dtype) }
                return tied
            }
            return try Merge.fold(plan.changes[name]!.operations, into: plan.base.checkpoint.tensor(name), stored: info,
                                  output: TensorInfo(name: name, dtype: dtype, shape: info.shape),
                                  readers: plan.readers, owners: plan.owners, selected: plan.selected)
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
