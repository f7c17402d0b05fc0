/// Reads `torch.save` files of flat state dicts (PEFT's adapter_model.bin, AdapterHub's
/// pytorch_adapter.bin) without executing anything.
public enum TorchCheckpointReader {
    /// Tensor bytes per file byte a state dict may materialize: every tensor its own storage is
    /// 1×; tied weights (several views of one storage) are a small multiple.
    public static let maximumExpansion = 4

    public static func read(path: String) throws -> [(name: String, tensor: HostTensor)] {
        let mapped = try MappedFile(path: path)
        return try withExtendedLifetime(mapped) { try read(bytes: mapped.bytes, file: path) }
    }

    /// The same from bytes in memory; `file` names them in errors.
    public static func read(bytes: UnsafeRawBufferPointer, file path: String) throws -> [(name: String, tensor: HostTensor)] {
        let archive = try StoredZipArchive(file: path, bytes: bytes)
        guard let pickleName = archive.names.first(where: { $0 == "data.pkl" || $0.hasSuffix("/data.pkl") }),
              let pickleEntry = archive.entries[pickleName] else {
            throw InputError(file: path, problem: "no data.pkl in the archive (not a torch.save file)")
        }
        let prefix = String(pickleName.dropLast("data.pkl".count))
        var unpickler = RestrictedUnpickler(file: path, code: archive.data(pickleEntry)) { key, dtype, count in
            guard let entry = archive.entries["\(prefix)data/\(key)"] else {
                throw InputError(file: path, problem: "storage \(key) has no data/\(key) entry")
            }
            let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
            guard !overflow, bytes == entry.size else {
                throw InputError(file: path, problem: "storage \(key) claims \(count) \(dtype.rawValue) elements but its entry holds \(entry.size) bytes")
            }
            return TorchStorage(dtype: dtype, data: archive.data(entry))
        }
        let root = try unpickler.run()
        guard case .dict(let dict) = root else {
            throw InputError(file: path, problem: "top-level object is not a dict of tensors")
        }
        var views: [(name: String, view: TorchTensorView)] = []
        var names = Set<String>()
        var total = 0
        for (key, value) in dict.entries {
            guard case .string(let name) = key else { throw InputError(file: path, problem: "a state-dict key is not a string") }
            guard case .tensor(let view) = value else { throw InputError(file: path, problem: "entry \(name) is not a tensor") }
            guard names.insert(name).inserted else { throw InputError(file: path, problem: "state-dict key \(name) appears twice") }
            total += view.byteCount
            views.append((name, view))
        }
        // Views may share a storage (tied weights), but memo references let a few bytes of pickle
        // name one storage any number of times: the copies are bounded by the file before any
        // is made.
        let limit = maximumExpansion * bytes.count
        guard total <= limit else {
            throw InputError(file: path, problem: "its tensors add up to \(total) bytes, more than \(maximumExpansion)× the \(bytes.count)-byte file (one storage referenced over and over)")
        }
        return views.map { ($0.name, $0.view.materialize()) }
    }
}
