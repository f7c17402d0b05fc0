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
    enum QuantizedOutput {
        static let scratchName = ".merged-fp32"

        /// Returns the tensor bytes written and what survived requantization of each merged
        /// quantized weight, in name order.
        static func write(_ stream: TensorStream, plan: Plan, baseFolder: String, maxShardSize: Int?,
                          into folder: String) throws -> (bytesWritten: Int, survival: [QuantizationSurvival]) {
            let scratch = (folder as NSString).appendingPathComponent(scratchName)
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: false)
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            try stream.write(into: scratch, baseFolder: baseFolder)
            let merged = try Checkpoint(storedAt: scratch)
            let base = plan.base.checkpoint
            let stored = base.stored
            let replacements = try requantized(Set(plan.changes.keys), base: base, merged: merged)
            let added = merged.storedNames.filter { stored.info($0) == nil && !base.names.contains($0) }
            let infos = stored.storedNames.map { name in
                replacements[name].map { TensorInfo(name: name, dtype: $0.dtype, shape: $0.shape) } ?? stored.info(name)!
            }
            let addedInfos = added.map { merged.info($0)! }
            var shards: [[TensorInfo]]
            if let maxShardSize {
                shards = CheckpointWriter.planShards(infos + addedInfos, maxShardSize: maxShardSize)
            } else {
                let byName = Dictionary(uniqueKeysWithValues: infos.map { ($0.name, $0) })
                shards = stored.shardFiles.map { file in stored.storedNames.filter { stored.shardOf($0) == file }.map { byName[$0]! } }
                shards[shards.count - 1] += addedInfos
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
            let requantized = try Checkpoint(path: folder)
            let survival = try plan.changes.keys.sorted().filter { base.isQuantized($0) }.map { name in
                try QuantizationSurvival.measure(name, base: base, requantized: requantized, merged: try merged.tensor(name).floats())
            }
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
    }
}
