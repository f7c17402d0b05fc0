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

extension FileAccessError {
    /// A failed call, named after `path` (the output a temporary file becomes) when given.
    init(_ failure: SystemCallError, reportedAs path: String? = nil) {
        self = .ioFailed(path: path ?? failure.path, operation: failure.operation, reason: failure.reason)
    }
}

/// A read-only memory map of a whole file. Reading a range touches only its pages, so one tensor
/// can be read from a large file without reading the rest.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let size: Int
    private let base: UnsafeRawPointer?

    public init(path: String) throws {
        self.path = path
        let fd: Int32
        do {
            fd = try POSIX.open(path, O_RDONLY | O_CLOEXEC)
        } catch {
            throw FileAccessError.cannotOpen(path: path, reason: error.reason)
        }
        defer { POSIX.close(fd) }
        let status: stat
        do {
            status = try POSIX.status(of: fd, path: path)
        } catch {
            throw FileAccessError(error)
        }
        guard POSIX.isRegularFile(status) else {
            throw FileAccessError.cannotOpen(path: path, reason: "not a regular file")
        }
        size = Int(status.st_size)
        if size == 0 {
            base = nil
            return
        }
        do {
            base = try POSIX.mapReadOnly(fd, size: size, path: path)
        } catch {
            throw FileAccessError.cannotMap(path: path, reason: error.reason)
        }
    }

    deinit {
        if let base { POSIX.unmap(base, size: size) }
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
        POSIX.advise(base, offset: offset, count: count, MADV_DONTNEED)
    }

    /// Tells the kernel a range will be read sequentially soon (prefetch for streaming passes).
    public func adviseSequential(offset: Int, count: Int) {
        guard let base, count > 0 else { return }
        POSIX.advise(base, offset: offset, count: count, MADV_WILLNEED)
    }
}
