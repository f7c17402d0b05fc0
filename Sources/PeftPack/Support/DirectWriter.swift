#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Sequential file output through O_DIRECT with a ring of aligned blocks: bytes are gathered into
/// one block while the filled ones go to the device, in order, on a background queue; the ring is
/// deep enough (48 MiB) to absorb a whole merged tensor, so computing the next tensor overlaps
/// writing the last. Large outputs (merged
/// models) then cost one user-space copy and no page-cache traffic: buffered writes plus the
/// fsync that makes them durable were the slowest part of merging (on the benchmark VM the kernel
/// spent longer copying into fresh page-cache pages than the disk took to write them).
///
/// Direct I/O needs block-aligned buffers, lengths and offsets; the last block is padded with
/// zeros and the file is truncated to its real length before it is committed.
final class DirectWriter {
    static let blockSize = 8 << 20
    static let blockCount = 6
    static let alignment = 4096

    private let fd: Int32
    private let path: String
    private var blocks: [UnsafeMutableRawPointer]
    private var inFlight = (0..<DirectWriter.blockCount).map { _ in DispatchGroup() }
    private var current = 0
    private var filled = 0
    private var blockOffset = 0
    private let queue = DispatchQueue(label: "peftpack.direct-writer")
    private let failureLock = NSLock()
    private var failure: String?
    private(set) var length = 0
    /// Touched only on the write queue.
    private var directRefused = false

    // O_DIRECT is a macro Glibc does not export without _GNU_SOURCE; its value differs between
    // x86-64 and arm64 Linux.
    #if arch(x86_64)
    static let directFlag: Int32 = 0o40000
    #else
    static let directFlag: Int32 = 0o200000
    #endif

    /// Opens `path` (already created) for direct writes, or returns nil where the file system
    /// does not support O_DIRECT (tmpfs, some network file systems). Errors name `reportedPath`
    /// (the output the temporary file becomes).
    init?(path: String, reportedPath: String) {
        #if os(Linux)
        guard let fd = try? POSIX.open(path, O_WRONLY | O_CLOEXEC | Self.directFlag) else { return nil }
        self.fd = fd
        self.path = reportedPath
        // Mapped, not malloc'ed: unmapping gives the memory back to the system when the file
        // ends, where the heap (which merge keeps from trimming) would hold on to every shard's
        // ring.
        var blocks: [UnsafeMutableRawPointer] = []
        for _ in 0..<Self.blockCount {
            guard let block = POSIX.mapAnonymous(size: Self.blockSize) else {
                blocks.forEach { POSIX.unmap($0, size: Self.blockSize) }
                POSIX.close(fd)
                return nil
            }
            blocks.append(block)
        }
        self.blocks = blocks
        #else
        return nil
        #endif
    }

    deinit {
        waitForWrites()
        POSIX.close(fd)
        blocks.forEach { POSIX.unmap($0, size: Self.blockSize) }
    }

    func append(_ bytes: UnsafeRawBufferPointer) throws {
        var remaining = bytes
        while !remaining.isEmpty {
            let count = min(Self.blockSize - filled, remaining.count)
            (blocks[current] + filled).copyMemory(from: remaining.baseAddress!, byteCount: count)
            filled += count
            length += count
            remaining = UnsafeRawBufferPointer(rebasing: remaining[count...])
            if filled == Self.blockSize { try submit() }
        }
    }

    /// Writes what is buffered, waits for the device, and cuts the padding off the end.
    func finish() throws {
        if filled > 0 {
            let padded = (filled + Self.alignment - 1) / Self.alignment * Self.alignment
            (blocks[current] + filled).initializeMemory(as: UInt8.self, repeating: 0, count: padded - filled)
            filled = padded
            try submit()
        }
        waitForWrites()
        try checkFailure()
        do {
            try POSIX.truncate(fd, length: length, path: path)
        } catch {
            throw FileAccessError(error)
        }
    }

    private func submit() throws {
        let address = Int(bitPattern: blocks[current]), count = filled, offset = blockOffset
        let group = inFlight[current]
        group.enter()
        queue.async {
            defer { group.leave() }
            self.write(UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: address)!, count: count), at: offset)
        }
        blockOffset += count
        filled = 0
        current = (current + 1) % Self.blockCount
        inFlight[current].wait()
        try checkFailure()
    }

    /// On the write queue: one block to the device, failures recorded for the next `submit`.
    private func write(_ block: UnsafeRawBufferPointer, at offset: Int) {
        do {
            try POSIX.writeAll(fd, block, at: offset, path: path)
        } catch where error.code == EINVAL && !directRefused {
            // Some file systems accept O_DIRECT at open but refuse the write (alignment rules
            // stricter than 4 KiB): fall back to buffered writes on the same fd, and start again.
            directRefused = true
            POSIX.clearStatusFlag(fd, Self.directFlag)
            write(block, at: offset)
        } catch {
            recordFailure(error.reason)
        }
    }

    private func waitForWrites() {
        inFlight.forEach { $0.wait() }
    }

    private func recordFailure(_ message: String) {
        failureLock.lock()
        if failure == nil { failure = message }
        failureLock.unlock()
    }

    private func checkFailure() throws {
        failureLock.lock()
        defer { failureLock.unlock() }
        if let failure { throw FileAccessError.ioFailed(path: path, operation: "write", reason: failure) }
    }
}
