/// Reads `torch.save` files of flat state dicts (PEFT's adapter_model.bin, AdapterHub's
/// pytorch_adapter.bin) without executing anything.
public enum TorchCheckpointReader {
    public static func read(path: String) throws -> [(name: String, tensor: HostTensor)] {
        let mapped = try MappedFile(path: path)
        let archive = try StoredZipArchive(file: path, bytes: mapped.bytes)
        guard let pickleName = archive.names.first(where: { $0 == "data.pkl" || $0.hasSuffix("/data.pkl") }),
              let pickleEntry = archive.entries[pickleName] else {
            throw TorchPickleError(file: path, problem: "no data.pkl in the archive (not a torch.save file)")
        }
        let prefix = String(pickleName.dropLast("data.pkl".count))
        var unpickler = RestrictedUnpickler(file: path, code: archive.data(pickleEntry)) { key, dtype, count in
            guard let entry = archive.entries["\(prefix)data/\(key)"] else {
                throw TorchPickleError(file: path, problem: "storage \(key) has no data/\(key) entry")
            }
            let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
            guard !overflow, bytes == entry.size else {
                throw TorchPickleError(file: path, problem: "storage \(key) claims \(count) \(dtype.rawValue) elements but its entry holds \(entry.size) bytes")
            }
            return TorchStorage(dtype: dtype, data: archive.data(entry))
        }
        let root = try unpickler.run()
        guard case .dict(let dict) = root else {
            throw TorchPickleError(file: path, problem: "top-level object is not a dict of tensors")
        }
        var result: [(name: String, tensor: HostTensor)] = []
        for (key, value) in dict.entries {
            guard case .string(let name) = key else { throw TorchPickleError(file: path, problem: "a state-dict key is not a string") }
            guard case .tensor(let tensor) = value else { throw TorchPickleError(file: path, problem: "entry \(name) is not a tensor") }
            result.append((name, tensor))
        }
        return withExtendedLifetime(mapped) { result }
    }
}
