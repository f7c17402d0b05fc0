import Foundation

/// Writes a set of tensors as a transformers-style checkpoint in a folder: one `model.safetensors`,
/// or, with a maximum shard size, `model-0000i-of-0000N.safetensors` shards plus
/// `model.safetensors.index.json`. Tensor bytes are pulled one at a time from `provider`. Every
/// shard is written to a temporary name first and moved into place only once all shards are
/// complete, the index last, so a failure leaves no partial checkpoint behind.
public enum CheckpointWriter {
    /// Gives a tensor's bytes to `sink`, whole or in consecutive parts.
    public typealias Provider = (_ tensor: TensorInfo, _ sink: (UnsafeRawBufferPointer) throws -> Void) throws -> Void

    /// Splits tensors into shards as huggingface_hub's `split_state_dict_into_shards_factory` does
    /// (what transformers' `save_pretrained` calls): tensors in the given order fill the current
    /// shard until the next one would exceed the limit; a tensor larger than the limit becomes a
    /// shard of its own at once, while the current shard stays open for the tensors after it.
    public static func planShards(_ tensors: [TensorInfo], maxShardSize: Int?) -> [[TensorInfo]] {
        guard let limit = maxShardSize else { return [tensors] }
        var shards: [[TensorInfo]] = []
        var current: [TensorInfo] = []
        var currentSize = 0
        for tensor in tensors {
            let size = tensor.byteCount ?? Int.max
            if size > limit {
                shards.append([tensor])
                continue
            }
            if size > limit - currentSize {
                shards.append(current)
                current = []
                currentSize = 0
            }
            current.append(tensor)
            currentSize += size
        }
        if !current.isEmpty || shards.isEmpty { shards.append(current) }
        return shards
    }

    public static func shardFileName(_ index: Int, of count: Int) -> String {
        String(format: "model-%05d-of-%05d.safetensors", index + 1, count)
    }

    /// Writes the checkpoint and returns the file names written (index last when sharded).
    @discardableResult
    public static func write(folder: String, tensors: [TensorInfo], metadata: [String: String]?,
                             maxShardSize: Int?, provider: Provider) throws -> [String] {
        try write(folder: folder, shards: planShards(tensors, maxShardSize: maxShardSize), metadata: metadata, provider: provider)
    }

    /// Writes a checkpoint with a given split into shards (e.g. the same split as a base model).
    @discardableResult
    public static func write(folder: String, shards: [[TensorInfo]], metadata: [String: String]?, provider: Provider) throws -> [String] {
        let names = shards.count == 1
            ? [Checkpoint.singleFileName]
            : shards.indices.map { shardFileName($0, of: shards.count) }
        var streams: [SafetensorsWriter.FileStream] = []
        var index: AtomicFileWriter?
        do {
            for (name, shard) in zip(names, shards) {
                let stream = try SafetensorsWriter.FileStream(destination: (folder as NSString).appendingPathComponent(name),
                                                              tensors: shard, metadata: metadata, direct: true)
                streams.append(stream)
                while let next = stream.nextTensor {
                    try provider(next) { try stream.appendPiece($0) }
                    guard stream.nextTensor?.name != next.name else {
                        throw InputError(file: (folder as NSString).appendingPathComponent(name), tensor: next.name, problem: "only \(stream.piece) of its \(next.byteCount ?? 0) bytes were written")
                    }
                }
                try stream.finish()
            }
            if shards.count > 1 {
                index = try AtomicFileWriter(destination: (folder as NSString).appendingPathComponent(Checkpoint.indexFileName))
                try index!.write(Array(indexText(shards: shards, names: names).utf8))
            }
            for stream in streams { try stream.commit() }
            try index?.commit()
        } catch {
            for stream in streams { stream.abandon() }
            index?.abandon()
            throw error
        }
        return index == nil ? names : names + [Checkpoint.indexFileName]
    }

    /// The index as transformers 5 writes it: `json.dumps(index, indent=2, sort_keys=True) + "\n"`
    /// with `total_size` the sum of the tensors' byte sizes and `total_parameters` the model's
    /// parameter count, here the sum of element counts (transformers counts parameters only, so a
    /// checkpoint holding persistent buffers would differ there).
    static func indexText(shards: [[TensorInfo]], names: [String]) -> String {
        var weightMap: [(tensor: String, file: String)] = []
        var totalSize = 0
        var totalParameters = 0
        for (name, shard) in zip(names, shards) {
            for tensor in shard {
                weightMap.append((tensor.name, name))
                totalSize += tensor.byteCount ?? 0
                totalParameters += tensor.elementCount ?? 0
            }
        }
        // Python's sort_keys orders by code point, which is UTF-8 byte order.
        weightMap.sort { $0.tensor.utf8.lexicographicallyPrecedes($1.tensor.utf8) }
        var text = "{\n  \"metadata\": {\n    \"total_parameters\": \(totalParameters),\n    \"total_size\": \(totalSize)\n  },\n  \"weight_map\": {\n"
        text += weightMap.map { "    \(pythonJSONString($0.tensor)): \(pythonJSONString($0.file))" }.joined(separator: ",\n")
        return text + "\n  }\n}\n"
    }

    /// A string as Python's `json.dumps` writes it by default (`ensure_ascii=True`): non-ASCII as
    /// `\uXXXX` escapes (surrogate pairs above the BMP), lowercase hex.
    static func pythonJSONString(_ text: String) -> String {
        var out = "\""
        for unit in text.utf16 {
            switch unit {
            case 0x22: out += "\\\""
            case 0x5C: out += "\\\\"
            case 0x0A: out += "\\n"
            case 0x0D: out += "\\r"
            case 0x09: out += "\\t"
            case 0x08: out += "\\b"
            case 0x0C: out += "\\f"
            case 0x20..<0x7F: out.unicodeScalars.append(Unicode.Scalar(unit)!)
            default: out += String(format: "\\u%04x", unit)
            }
        }
        return out + "\""
    }
}
