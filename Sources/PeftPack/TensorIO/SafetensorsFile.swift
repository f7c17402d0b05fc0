/// One safetensors file, memory-mapped: the header is parsed and validated at open, and each
/// tensor's bytes are read only when asked for.
public final class SafetensorsFile: @unchecked Sendable {
    public let path: String
    public let header: SafetensorsHeader
    private let mapped: MappedFile
    private let index: [String: Int]

    public init(path: String) throws {
        self.path = path
        mapped = try MappedFile(path: path)
        header = try SafetensorsHeader(file: path, bytes: mapped.bytes)
        var index: [String: Int] = [:]
        for (position, entry) in header.entries.enumerated() {
            index[entry.info.name] = position
        }
        self.index = index
    }

    public var metadata: [String: String]? { header.metadata }

    /// `__metadata__` in file order, for rewriting the file byte-identically.
    public var metadataEntries: [(key: String, value: String)]? { header.metadataEntries }

    /// Tensor names in data-offset order.
    public var names: [String] { header.entries.map(\.info.name) }

    public var infos: [TensorInfo] { header.entries.map(\.info) }

    public var fileSize: Int { mapped.size }

    public func info(_ name: String) -> TensorInfo? {
        index[name].map { header.entries[$0].info }
    }

    /// Calls `body` with the tensor's bytes, straight from the map (valid only inside `body`).
    public func withBytes<R>(_ name: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        guard let position = index[name] else {
            throw InputError(file: path, tensor: name, problem: "no such tensor")
        }
        let range = header.entries[position].dataRange
        return try body(mapped.slice(offset: header.dataStart + range.lowerBound, count: range.count))
    }

    /// Calls `body` with the tensor's bytes in consecutive windows (at least once, so an empty
    /// tensor gives one empty window), dropping each window's mapped pages once `body` is done
    /// with it: a pass over a large tensor keeps one window resident, not the tensor.
    public func streamBytes(_ name: String, window: Int = SafetensorsFile.streamWindow, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard let position = index[name] else {
            throw InputError(file: path, tensor: name, problem: "no such tensor")
        }
        let range = header.entries[position].dataRange
        let start = header.dataStart + range.lowerBound
        var offset = 0
        repeat {
            let count = min(window, range.count - offset)
            if offset + count < range.count {
                mapped.adviseSequential(offset: start + offset + count, count: min(window, range.count - offset - count))
            }
            try body(mapped.slice(offset: start + offset, count: count))
            mapped.release(offset: start + offset, count: count)
            offset += count
        } while offset < range.count
    }

    public static let streamWindow = 8 << 20

    /// Drops the mapped pages of bytes `range` of a tensor's data.
    public func releasePages(_ name: String, bytes range: Range<Int>) {
        guard let position = index[name] else { return }
        let data = header.entries[position].dataRange
        let clamped = range.clamped(to: 0..<data.count)
        mapped.release(offset: header.dataStart + data.lowerBound + clamped.lowerBound, count: clamped.count)
    }

    /// Asks the kernel to start reading the tensor's bytes now (MADV_WILLNEED), so that reading
    /// it later, after other work, does not wait for the disk.
    public func prefetch(_ name: String) {
        guard let position = index[name] else { return }
        let range = header.entries[position].dataRange
        mapped.adviseSequential(offset: header.dataStart + range.lowerBound, count: range.count)
    }

    /// Lets the kernel drop the tensor's mapped pages from this process's resident memory.
    public func releasePages(_ name: String) {
        guard let position = index[name] else { return }
        let range = header.entries[position].dataRange
        mapped.release(offset: header.dataStart + range.lowerBound, count: range.count)
    }

    public func tensor(_ name: String) throws -> HostTensor {
        guard let info = info(name) else {
            throw InputError(file: path, tensor: name, problem: "no such tensor")
        }
        let bytes = try withBytes(name) { [UInt8]($0) }
        // The copy is what the caller keeps; the mapped pages go (the page cache still has them),
        // so reading every tensor of a file in turn costs one tensor of memory, not the file.
        releasePages(name)
        return HostTensor(dtype: info.dtype, shape: info.shape, bytes: bytes)
    }
}
