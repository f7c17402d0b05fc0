#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public enum FileAccessError: UserFacingError {
    case cannotOpen(path: String, reason: String)
    case cannotMap(path: String, reason: String)
    case ioFailed(path: String, operation: String, reason: String)

    public var description: String {
        switch self {
        case .cannotOpen(let path, let reason): "\(path): cannot open: \(reason)"
        case .cannotMap(let path, let reason): "\(path): cannot memory-map: \(reason)"
        case .ioFailed(let path, let operation, let reason): "\(path): \(operation) failed: \(reason)"
        }
    }
}

func systemErrorText(_ code: Int32 = errno) -> String {
    String(cString: strerror(code))
}

/// A read-only memory map of a whole file. Reading a range touches only its pages, so one tensor
/// can be read from a large file without reading the rest.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let size: Int
    private let base: UnsafeRawPointer?

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FileAccessError.cannotOpen(path: path, reason: systemErrorText()) }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0 else {
            throw FileAccessError.ioFailed(path: path, operation: "stat", reason: systemErrorText())
        }
        guard (status.st_mode & S_IFMT) == S_IFREG else {
            throw FileAccessError.cannotOpen(path: path, reason: "not a regular file")
        }
        size = Int(status.st_size)
        if size == 0 {
            base = nil
            return
        }
        let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let mapped, mapped != MAP_FAILED else {
            throw FileAccessError.cannotMap(path: path, reason: systemErrorText())
        }
        base = UnsafeRawPointer(mapped)
    }

    deinit {
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), size) }
    }

    /// The whole file's bytes; valid while `self` is alive.
    public var bytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base, count: size)
    }

    /// Bytes `[offset, offset + count)`; the caller has checked the range lies inside the file.
    public func slice(offset: Int, count: Int) -> UnsafeRawBufferPointer {
        precondition(offset >= 0 && count >= 0 && offset <= size && count <= size - offset)
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + count)])
    }

    /// Drops a range's pages from this process's memory (they are re-read from the file if touched
    /// again), so a streaming pass over a large file keeps a small resident set.
    public func release(offset: Int, count: Int) {
        guard let base, count > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = offset / page * page
        madvise(UnsafeMutableRawPointer(mutating: base + start), offset + count - start, MADV_DONTNEED)
    }

    /// Tells the kernel a range will be read sequentially soon (prefetch for streaming passes).
    public func adviseSequential(offset: Int, count: Int) {
        guard let base, count > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = offset / page * page
        madvise(UnsafeMutableRawPointer(mutating: base + start), offset + count - start, MADV_WILLNEED)
    }
}
