import Foundation

/// The files of one GGUF model: the file itself, or every shard of a split model as llama.cpp's
/// gguf-split and convert_hf_to_gguf.py `--split-max-*` write them — `NAME-00001-of-0000N.gguf`
/// … `NAME-0000N-of-0000N.gguf`, each with `split.no` (from 0), `split.count` and
/// `split.tensors.count`, the model's metadata in the first — checked to be complete and
/// consistent before any is used.
enum GGUFShards {
    static let number = "split.no", count = "split.count", tensorCount = "split.tensors.count"

    static func open(_ path: String) throws -> [GGUF.File] {
        let first = try GGUF.File(path: path)
        guard let shards = first.value(count)?.integerValue, shards > 1 else { return [first] }
        let index = first.value(number)?.integerValue ?? 0
        guard index == 0 else {
            throw InputError(file: path, problem: "is shard \(index + 1) of \(shards) of a split model; give the first (…-00001-of-\(name(shards)).gguf)")
        }
        let suffix = "-\(name(1))-of-\(name(shards)).gguf"
        guard path.hasSuffix(suffix) else {
            throw InputError(file: path, problem: "is the first of \(shards) shards but is not named NAME\(suffix), so the others cannot be found")
        }
        let stem = String(path.dropLast(suffix.count))
        var files = [first]
        for shard in 1..<shards {
            let shardPath = "\(stem)-\(name(shard + 1))-of-\(name(shards)).gguf"
            guard FileManager.default.fileExists(atPath: shardPath) else {
                throw InputError(file: path, problem: "is split in \(shards) shards, but shard \(shard + 1), \(shardPath), is missing")
            }
            let file = try GGUF.File(path: shardPath)
            guard file.value(number)?.integerValue == shard, file.value(count)?.integerValue == shards else {
                throw InputError(file: shardPath, problem: "does not say it is shard \(shard + 1) of \(shards) (split.no \(file.value(number).map { "\($0)" } ?? "missing"), split.count \(file.value(count).map { "\($0)" } ?? "missing"))")
            }
            files.append(file)
        }
        let held = files.map(\.tensors.count).reduce(0, +)
        if let declared = first.value(tensorCount)?.integerValue, declared != held {
            throw InputError(file: path, problem: "declares \(declared) tensors over its \(shards) shards, which hold \(held)")
        }
        return files
    }

    private static func name(_ shard: Int) -> String {
        String(repeating: "0", count: max(0, 5 - String(shard).count)) + String(shard)
    }
}
