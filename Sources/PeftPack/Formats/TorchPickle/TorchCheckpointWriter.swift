/// Writes a flat state dict as `torch.save` does (zip archive, pickle protocol 2), for tools whose
/// default load is `torch.load` of a `.bin` (AdapterHub's `load_adapter` reads
/// `pytorch_adapter.bin` unless told `use_safetensors=True`).
///
/// The pickle is the one Python's pickler emits for a plain dict of contiguous tensors, memo
/// entries included, so it is byte-identical to torch 2.x's for the same dict (checked against
/// AdapterHub's own file in the tests). The archive holds the records torch 2.13 writes except
/// `.data/serialization_id`, which is random per save and not read by `torch.load`: the same
/// tensors always give the same bytes.
public enum TorchCheckpointWriter {
    public static func archive(_ tensors: [(key: String, tensor: HostTensor)], name: String) throws -> [UInt8] {
        var zip = StoredZipWriter()
        try zip.add(name + "/data.pkl", StateDictPickler.pickle(tensors))
        try zip.add(name + "/.format_version", Array("1".utf8))
        try zip.add(name + "/.storage_alignment", Array("\(StoredZipWriter.alignment)".utf8))
        try zip.add(name + "/byteorder", Array("little".utf8))
        for (index, entry) in tensors.enumerated() {
            try zip.add(name + "/data/\(index)", entry.tensor.bytes)
        }
        try zip.add(name + "/version", Array("3\n".utf8))
        return try zip.finish()
    }
}

/// Python's pickler (protocol 2) on `{key: tensor}`: each tensor reduces to
/// `torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())` with its
/// storage as a persistent id `('storage', torch.XStorage, 'N', 'cpu', numel)`. Every object is
/// memoized as Python memoizes it (strings, globals, non-empty tuples, reduce results), and
/// objects Python shares (the globals, the 'storage' and 'cpu' literals) are fetched back.
struct StateDictPickler {
    private var out: [UInt8] = [0x80, 2]
    private var memoCount = 0
    private var shared: [String: Int] = [:]

    static func pickle(_ tensors: [(key: String, tensor: HostTensor)]) throws -> [UInt8] {
        var pickler = StateDictPickler()
        pickler.out.append(PickleOpcode.emptyDict)
        pickler.memoize()
        // Python writes SETITEMS in batches of 1000, and a single item as SETITEM.
        var start = 0
        while start < tensors.count {
            let batch = tensors[start..<min(start + 1000, tensors.count)]
            if batch.count > 1 { pickler.out.append(PickleOpcode.mark) }
            for (offset, entry) in zip(batch.indices, batch) {
                pickler.string(entry.key)
                try pickler.tensor(entry.tensor, storageKey: offset)
            }
            pickler.out.append(batch.count > 1 ? PickleOpcode.setItems : PickleOpcode.setItem)
            start += batch.count
        }
        pickler.out.append(PickleOpcode.stop)
        return pickler.out
    }

    private mutating func memoize() {
        if memoCount < 256 {
            out += [PickleOpcode.binPut, UInt8(memoCount)]
        } else {
            out.append(PickleOpcode.longBinPut)
            appendLittleEndian(UInt32(memoCount))
        }
        memoCount += 1
    }

    /// Emits a shared object once, then memo references to it.
    private mutating func sharedObject(_ identity: String, _ emit: (inout StateDictPickler) -> Void) {
        if let index = shared[identity] {
            if index < 256 {
                out += [PickleOpcode.binGet, UInt8(index)]
            } else {
                out.append(PickleOpcode.longBinGet)
                appendLittleEndian(UInt32(index))
            }
            return
        }
        emit(&self)
        shared[identity] = memoCount
        memoize()
    }

    private mutating func string(_ text: String) {
        let bytes = Array(text.utf8)
        out.append(PickleOpcode.binUnicode)
        appendLittleEndian(UInt32(bytes.count))
        out += bytes
        memoize()
    }

    private mutating func global(_ module: String, _ name: String) {
        sharedObject("global \(module).\(name)") { pickler in
            pickler.out.append(PickleOpcode.global)
            pickler.out += Array("\(module)\n\(name)\n".utf8)
        }
    }

    private mutating func sharedString(_ text: String) {
        sharedObject("string \(text)") { pickler in
            let bytes = Array(text.utf8)
            pickler.out.append(PickleOpcode.binUnicode)
            pickler.appendLittleEndian(UInt32(bytes.count))
            pickler.out += bytes
        }
    }

    private mutating func integer(_ value: Int) {
        switch value {
        case 0...0xFF: out += [PickleOpcode.binInt1, UInt8(value)]
        case 0x100...0xFFFF:
            out.append(PickleOpcode.binInt2)
            appendLittleEndian(UInt16(value))
        case Int(Int32.min)...Int(Int32.max):
            out.append(PickleOpcode.binInt)
            appendLittleEndian(UInt32(bitPattern: Int32(value)))
        default:
            // LONG1: the shortest little-endian two's complement that keeps the sign.
            var bytes = withUnsafeBytes(of: Int64(value).littleEndian, Array.init)
            while bytes.count > 1, (bytes[bytes.count - 1] == 0 && bytes[bytes.count - 2] & 0x80 == 0)
                || (bytes[bytes.count - 1] == 0xFF && bytes[bytes.count - 2] & 0x80 != 0) {
                bytes.removeLast()
            }
            out += [PickleOpcode.long1, UInt8(bytes.count)] + bytes
        }
    }

    private mutating func tuple(_ values: [Int]) {
        if values.isEmpty {
            out.append(PickleOpcode.emptyTuple)
            return
        }
        if values.count > 3 { out.append(PickleOpcode.mark) }
        for value in values { integer(value) }
        out.append([PickleOpcode.tuple, PickleOpcode.tuple1, PickleOpcode.tuple2, PickleOpcode.tuple3][values.count > 3 ? 0 : values.count])
        memoize()
    }

    private mutating func tensor(_ tensor: HostTensor, storageKey: Int) throws {
        guard let storageType = RestrictedUnpickler.storageTypes.first(where: { $0.value == tensor.dtype })?.key,
              let dot = storageType.lastIndex(of: ".") else {
            throw UsageError("torch.save has no storage type for dtype \(tensor.dtype.rawValue)")
        }
        let count = Shape.elementCount(tensor.shape) ?? 0
        var strides = [Int](repeating: 1, count: tensor.shape.count)
        for axis in strides.indices.dropLast().reversed() { strides[axis] = strides[axis + 1] * tensor.shape[axis + 1] }

        global("torch._utils", "_rebuild_tensor_v2")
        out.append(PickleOpcode.mark)
        out.append(PickleOpcode.mark)
        sharedString("storage")
        global(String(storageType[..<dot]), String(storageType[storageType.index(after: dot)...]))
        string("\(storageKey)")
        sharedString("cpu")
        integer(count)
        out.append(PickleOpcode.tuple)
        memoize()
        out.append(PickleOpcode.binPersId)
        integer(0)
        tuple(tensor.shape)
        tuple(strides)
        out.append(PickleOpcode.newFalse)
        global("collections", "OrderedDict")
        out.append(PickleOpcode.emptyTuple)
        out.append(PickleOpcode.reduce)
        memoize()
        out.append(PickleOpcode.tuple)
        memoize()
        out.append(PickleOpcode.reduce)
        memoize()
    }

    private mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { out += $0 }
    }
}
