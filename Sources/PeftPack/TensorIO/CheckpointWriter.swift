import Foundation

/// Writes a set of tensors as a transformers-style checkpoint in a folder: one `model.safetensors`,
/// or, with a maximum shard size, `model-0000i-of-0000N.safetensors` shards plus
/// `model.safetensors.index.json`. Shards are filled in the given tensor order, starting a new shard
/// when the next tensor would exceed the limit (a tensor larger than the limit gets a shard of its
/// own), as transformers does. Tensor bytes are pulled one at a time from `provider`.
public enum CheckpointWriter {
    public typealias Provider = (_ tensor: TensorInfo, _ sink: (UnsafeRawBufferPointer) throws -> Void) throws -> Void

    /// Splits tensors into shards; each shard is a list of tensors in the given order.
    public static func planShards(_ tensors: [TensorInfo], maxShardSize: Int?) -> [[TensorInfo]] {
        guard let limit = maxShardSize else { return [tensors] }
        var shards: [[TensorInfo]] = []
        var current: [TensorInfo] = []
        var currentSize = 0
        for tensor in tensors {
            let size = tensor.byteCount ?? 0
            if !current.isEmpty && currentSize + size > limit {
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
        if shards.count == 1 {
            try writeShard(path: (folder as NSString).appendingPathComponent(Checkpoint.singleFileName),
                           tensors: shards[0], metadata: metadata, provider: provider)
            return [Checkpoint.singleFileName]
        }
        var written: [String] = []
        var weightMap: [String: String] = [:]
        var totalSize = 0
        for (index, shard) in shards.enumerated() {
            let name = shardFileName(index, of: shards.count)
            try writeShard(path: (folder as NSString).appendingPathComponent(name), tensors: shard,
                           metadata: metadata, provider: provider)
            for tensor in shard {
                weightMap[tensor.name] = name
                totalSize += tensor.byteCount ?? 0
            }
            written.append(name)
        }
        try writeIndex(folder: folder, weightMap: weightMap, totalSize: totalSize)
        written.append(Checkpoint.indexFileName)
        return written
    }

    static func writeShard(path: String, tensors: [TensorInfo], metadata: [String: String]?, provider: Provider) throws {
        let stream = try SafetensorsWriter.FileStream(destination: path, tensors: tensors, metadata: metadata)
        do {
            while let next = stream.nextTensor {
                try provider(next) { try stream.append($0) }
            }
            try stream.commit()
        } catch {
            stream.abandon()
            throw error
        }
    }

    /// The index as transformers writes it: `json.dumps(index, indent=2, sort_keys=True) + "\n"`.
    static func writeIndex(folder: String, weightMap: [String: String], totalSize: Int) throws {
        var text = "{\n  \"metadata\": {\n    \"total_size\": \(totalSize)\n  },\n  \"weight_map\": {\n"
        text += weightMap.keys.sorted().map {
            "    \(SafetensorsWriter.jsonString($0)): \(SafetensorsWriter.jsonString(weightMap[$0]!))"
        }.joined(separator: ",\n")
        text += "\n  }\n}\n"
        let output = try AtomicFileWriter(destination: (folder as NSString).appendingPathComponent(Checkpoint.indexFileName))
        try output.write(Array(text.utf8))
        try output.commit()
    }
}
