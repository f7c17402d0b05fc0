#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A failed system call: what was attempted, on which path, and the errno it returned. Callers
/// turn it into their domain's error (FileAccessError, OutputError), naming the path a user knows.
public struct SystemCallError: Error, Equatable, Sendable {
    /// The user-facing verb ("write", "fsync", "truncate", "rename", …).
    public let operation: String
    public let path: String
    public let code: Int32
    /// Set instead of `code` when the call "succeeded" without doing anything (a write of 0 bytes).
    public let detail: String?

    init(_ operation: String, _ path: String, code: Int32 = errno, detail: String? = nil) {
        self.operation = operation
        self.path = path
        self.code = code
        self.detail = detail
    }

    /// The reason as the C library words it ("No space left on device").
    public var reason: String { detail ?? systemErrorText(code) }
}

func systemErrorText(_ code: Int32 = errno) -> String {
    String(cString: strerror(code))
}

/// Every POSIX file call peftpack makes goes through here (as swift-system's and NIO's `Posix`
/// wrappers do), so the EINTR retry and the return-code checks exist once and the rest of the code
/// sees typed errors, not `-1` and errno. Calls that cannot be interrupted on a regular file
/// (rename, unlink, mkdir) are not retried.
enum POSIX {
    /// Retries `call` while it fails with EINTR (a signal arrived before it did anything).
    private static func retryingInterrupts<T: BinaryInteger>(_ call: () -> T) -> T {
        while true {
            let result = call()
            if result >= 0 || errno != EINTR { return result }
        }
    }

    static func open(_ path: String, _ flags: Int32, mode: mode_t = 0) throws(SystemCallError) -> Int32 {
        let fd = retryingInterrupts { Glibc.open(path, flags, mode) }
        guard fd >= 0 else { throw SystemCallError("open", path) }
        return fd
    }

    /// Closing is never retried: Linux frees the descriptor even when close reports EINTR.
    static func close(_ fd: Int32) {
        _ = Glibc.close(fd)
    }

    /// Writes all of `buffer` at the current position, or at `offset` when given (pwrite).
    static func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, at offset: Int? = nil,
                         path: String) throws(SystemCallError) {
        var done = 0
        while done < buffer.count {
            let written = try writeOnce(fd, UnsafeRawBufferPointer(rebasing: buffer[done...]),
                                        at: offset.map { $0 + done }, path: path)
            guard written > 0 else { throw SystemCallError("write", path, code: 0, detail: "the device accepted no bytes") }
            done += written
        }
    }

    /// One write or pwrite, retried only on EINTR; returns the bytes written (possibly fewer).
    static func writeOnce(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, at offset: Int?,
                          path: String) throws(SystemCallError) -> Int {
        let written = retryingInterrupts {
            if let offset { return Glibc.pwrite(fd, buffer.baseAddress, buffer.count, off_t(offset)) }
            return Glibc.write(fd, buffer.baseAddress, buffer.count)
        }
        guard written >= 0 else { throw SystemCallError("write", path) }
        return written
    }

    static func fsync(_ fd: Int32, path: String) throws(SystemCallError) {
        guard retryingInterrupts({ Glibc.fsync(fd) }) == 0 else { throw SystemCallError("fsync", path) }
    }

    /// Starts writing `[offset, offset + count)` back to the disk without waiting for it, so a
    /// later fsync has only the rest to wait for. On Linux POSIX_FADV_DONTNEED starts the
    /// writeback of a range's dirty pages (WB_SYNC_NONE) and drops its clean ones from the page
    /// cache (sync_file_range, the plain call, is not in Swift's Glibc module). Advisory: a
    /// refusal changes nothing.
    static func startWriteback(_ fd: Int32, offset: Int, count: Int) {
        #if os(Linux)
        _ = posix_fadvise(fd, off_t(offset), off_t(count), POSIX_FADV_DONTNEED)
        #endif
    }

    static func truncate(_ fd: Int32, length: Int, path: String) throws(SystemCallError) {
        guard retryingInterrupts({ Glibc.ftruncate(fd, off_t(length)) }) == 0 else {
            throw SystemCallError("truncate", path)
        }
    }

    /// Removes `flag` from the descriptor's status flags (O_DIRECT after a refused direct write).
    static func clearStatusFlag(_ fd: Int32, _ flag: Int32) {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~flag)
    }

    static func rename(_ source: String, to destination: String) throws(SystemCallError) {
        guard Glibc.rename(source, destination) == 0 else { throw SystemCallError("rename", destination) }
    }

    /// Best effort: used on temporaries whose removal failing changes nothing for the user.
    static func unlink(_ path: String) {
        _ = Glibc.unlink(path)
    }

    /// Succeeds when the folder exists afterwards (created now or by someone else before).
    static func makeFolder(_ path: String, mode: mode_t = 0o755) throws(SystemCallError) {
        guard mkdir(path, mode) == 0 || errno == EEXIST else { throw SystemCallError("mkdir", path) }
    }

    /// Creates a new folder; an existing one is an error (EEXIST), as for an exclusive open.
    static func makeNewFolder(_ path: String, mode: mode_t = 0o755) throws(SystemCallError) {
        guard mkdir(path, mode) == 0 else { throw SystemCallError("mkdir", path) }
    }

    /// The status of what `path` names, following symbolic links; nil when it does not exist.
    static func status(_ path: String) -> stat? {
        var result = stat()
        return stat(path, &result) == 0 ? result : nil
    }

    /// The status of `path` itself (a symbolic link is not followed); nil when it does not exist.
    static func linkStatus(_ path: String) -> stat? {
        var result = stat()
        return lstat(path, &result) == 0 ? result : nil
    }

    static func status(of fd: Int32, path: String) throws(SystemCallError) -> stat {
        var result = stat()
        guard fstat(fd, &result) == 0 else { throw SystemCallError("stat", path) }
        return result
    }

    static func isFolder(_ status: stat) -> Bool { (status.st_mode & S_IFMT) == S_IFDIR }

    static func isRegularFile(_ status: stat) -> Bool { (status.st_mode & S_IFMT) == S_IFREG }

    /// The absolute path with every symbolic link resolved, or nil when it does not exist.
    static func realPath(_ path: String) -> String? {
        guard let pointer = realpath(path, nil) else { return nil }
        defer { free(pointer) }
        return String(cString: pointer)
    }

    /// fsync on a folder makes a rename in it durable; best effort (some file systems refuse it).
    static func syncFolder(_ folder: String) {
        guard let fd = try? open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC) else { return }
        _ = retryingInterrupts { Glibc.fsync(fd) }
        close(fd)
    }
}

/// Memory maps, behind the same seam.
extension POSIX {
    static func mapReadOnly(_ fd: Int32, size: Int, path: String) throws(SystemCallError) -> UnsafeRawPointer {
        let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let mapped, mapped != MAP_FAILED else { throw SystemCallError("memory-map", path) }
        return UnsafeRawPointer(mapped)
    }

    /// Zeroed, page-aligned memory of `size` bytes that `unmap` gives back to the system at once.
    static func mapAnonymous(size: Int) -> UnsafeMutableRawPointer? {
        let mapped = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let mapped, mapped != MAP_FAILED else { return nil }
        return mapped
    }

    static func unmap(_ address: UnsafeRawPointer, size: Int) {
        _ = munmap(UnsafeMutableRawPointer(mutating: address), size)
    }

    /// Advice on the pages holding `[offset, offset + count)` of a mapping starting at `base`.
    static func advise(_ base: UnsafeRawPointer, offset: Int, count: Int, _ advice: Int32) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = offset / page * page
        _ = madvise(UnsafeMutableRawPointer(mutating: base + start), offset + count - start, advice)
    }
}

/// Processes, for telling a live writer's temporaries from a killed one's.
extension POSIX {
    static var processID: pid_t { getpid() }

    /// False only when no process has this id (signal 0 checks existence without sending one).
    static func processExists(_ pid: pid_t) -> Bool {
        !(kill(pid, 0) != 0 && errno == ESRCH)
    }
}
