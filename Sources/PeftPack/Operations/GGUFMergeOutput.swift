import Foundation

extension Merge {
    /// The output of a merge into a GGUF base: one GGUF file with the base's key/value entries
    /// byte for byte (a split model's `split.*` keys dropped: the output is one file), its tensors
    /// in its order, untouched ones copied block for block, each merged one computed in fp64 from
    /// the dequantized base and the adapters, put back in the converter's row order and written as
    /// `GGUFPrecision` decides:
    /// - a float type: rounded once from the fp64 merge;
    /// - a quantized type: rounded to fp32 (what gguf-py and ggml quantize from), then quantized
    ///   by that type's reference algorithm, with what survived measured
    ///   (QuantizationSurvival), and promoted to a wider type when asked and too little did.
    enum GGUFOutput {
        struct Result {
            var bytesWritten: Int
            var survival: [QuantizationSurvival]
            var maxAbsDelta = 0.0
            /// Per selected adapter: elements changed, and how many rounding returned to the base's value.
            var changed: [Int]
            var lost: [Int]

            func adapterReports(_ plan: Plan) -> [AdapterReport] {
                plan.selected.enumerated().map { position, entry in
                    AdapterReport(pack: plan.selection.packs[plan.owners[position]].path, adapter: entry.adapter.name, weight: entry.weight,
                                  changedElements: changed[position], lostToRounding: lost[position],
                                  lostShare: changed[position] > 0 ? Double(lost[position]) / Double(changed[position]) : 0)
                }
            }
        }

        static func write(plan: Plan, model: GGUFBaseModel, output: String, options: Options, protecting inputs: [String],
                          progress: ((Int, Int) -> Void)?) throws -> Result {
            if let head = plan.tied?.addedHead {
                throw InputError(file: model.path, problem: "ties its head to token_embd and the adapters change \(head.name) and the embedding differently; writing an untied GGUF model is not supported yet: merge keeping the tie (a reported cost) or into the Hugging Face checkpoint")
            }
            let entries = model.names.map { (name: $0, stored: model.storedEntry($0)!) }
            let isMerged = entries.map { plan.changes[$0.name] != nil || plan.tied?.outputs[$0.name] != nil }
            // Every merged tensor's type is checked against its shape before anything is written.
            let targets = try entries.indices.map { index in
                isMerged[index] ? try options.ggufPrecision.type(merging: entries[index].stored.entry, file: model.path) : entries[index].stored.entry.type
            }
            if let promotion = options.promotion {
                for index in entries.indices where isMerged[index] && targets[index].isQuantized {
                    _ = try GGUFPrecision.fixed(promotion.type).type(merging: entries[index].stored.entry, file: model.path)
                }
            }
            try OutputDestination.claim(output, as: .file, force: options.force, inputs: inputs)
            if let first = plan.binding.pendingTensors.first { try plan.binding.checkContent(first) }
            let first = entries[0].stored.file
            let metadata = first.metadata.indices.filter { !first.metadata[$0].key.hasPrefix("split.") }.map(first.rawMetadataEntry)
            let writer = try AtomicFileWriter(destination: output)
            let file = try GGUFModelWriter(writer: writer, metadata: metadata, tensors: entries.map { ($0.stored.entry.name, $0.stored.entry.shape) },
                                             alignment: first.alignment)
            var result = Result(bytesWritten: 0, survival: [], changed: Array(repeating: 0, count: plan.selected.count),
                                lost: Array(repeating: 0, count: plan.selected.count))
            let stream = TensorStream(plan, progress: nil)
            try OrderedParallel.forEach(count: entries.count, workers: Cores.active, work: { index -> MergedTensor? in
                guard isMerged[index] else { return nil }
                return try merged(entries[index].name, stored: entries[index].stored, as: targets[index], plan: plan, stream: stream,
                                  model: model, options: options)
            }, emit: { index, merged in
                try plan.binding.checkContent(entries[index].name)
                if let merged {
                    if let measured = merged.survival { result.survival.append(measured) }
                    result.maxAbsDelta = max(result.maxAbsDelta, merged.largest)
                    for adapter in merged.adapters {
                        result.changed[adapter] += merged.changed
                        result.lost[adapter] += merged.lost
                    }
                    try file.append(merged.type) { sink in try merged.bytes.withUnsafeBytes(sink) }
                } else {
                    let stored = entries[index].stored
                    try file.append(stored.entry.type) { sink in try stored.file.withBytes(stored.entry, sink) }
                }
                progress?(index + 1, entries.count)
            })
            try plan.binding.checkRemainingContent()
            try file.finish()
            try writer.commit()
            result.bytesWritten = writer.bytesWritten
            result.survival.sort { $0.tensor < $1.tensor }
            return result
        }

        private struct MergedTensor {
            var type: GGUF.ElementType
            var bytes: [UInt8]
            var survival: QuantizationSurvival?
            /// What the fold did (FoldedTensor's counts), in the written type when it is a float one.
            var changed: Int
            var lost: Int
            var largest: Double
            var adapters: Set<Int>

            init(type: GGUF.ElementType, bytes: [UInt8], survival: QuantizationSurvival? = nil, folded: FoldedTensor) {
                self.type = type
                self.bytes = bytes
                self.survival = survival
                (changed, lost, largest, adapters) = (folded.changed, folded.lost, folded.largest, folded.adapters)
            }
        }

        /// One merged tensor's bytes in `type` (and the promoted type, when it survived too little).
        private static func merged(_ name: String, stored: (file: GGUF.File, entry: GGUF.TensorEntry), as type: GGUF.ElementType,
                                   plan: Plan, stream: TensorStream, model: GGUFBaseModel, options: Options) throws -> MergedTensor {
            let checkpoint = plan.base.checkpoint
            let info = checkpoint.info(name)!
            var original: HostTensor?
            // LoRA-only changes take merge's fused path (B·A by dgemm, one rounding in C) on the
            // dequantized base, as a safetensors base does; others the fp64 fold.
            func fold(to dtype: DType) throws -> FoldedTensor {
                if var tied = plan.tied?.outputs[name] {
                    // Computed by the tie's plan in fp32; a float output rounds it a second time.
                    if tied.result.dtype != dtype { tied.result = HostTensor(floats: tied.result.floats(), shape: info.shape, dtype: dtype) }
                    return tied
                }
                if original == nil { original = try checkpoint.tensor(name) as HostTensor }
                return try stream.merged(TensorInfo(name: name, dtype: dtype, shape: info.shape), stored: info, base: original!)
            }
            if let dtype = type.floatDType {
                let folded = try fold(to: dtype)
                return MergedTensor(type: type, bytes: GGUF.encode(model.storedOrder(name, checkpointValues: folded.result.floats()), as: type), folded: folded)
            }
            let folded = try fold(to: .f32)
            let values = model.storedOrder(name, checkpointValues: folded.result.floats())
            let bytes = GGUF.encode(values, as: type)
            var measured = QuantizationSurvival.measure(name, as: type, base: stored.file.floats(stored.entry), merged: values, quantized: bytes)
            guard let promotion = options.promotion, promotion.allMerged || measured.survival < options.minSurvival else {
                return MergedTensor(type: type, bytes: bytes, survival: measured, folded: folded)
            }
            measured.promotedTo = promotion.type.ggmlName
            // A float promotion rounds once from the fp64 merge, as an unquantized output does.
            let promotedValues = try promotion.type.floatDType.map { model.storedOrder(name, checkpointValues: try fold(to: $0).result.floats()) } ?? values
            return MergedTensor(type: promotion.type, bytes: GGUF.encode(promotedValues, as: promotion.type), survival: measured, folded: folded)
        }
    }
}
