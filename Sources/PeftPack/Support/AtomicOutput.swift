#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Writes a file so that readers see either the old state or the complete new file, never a
/// partial one: data goes to a temporary file in the destination's folder, is fsync'ed, then
/// renamed over the destination. An interrupted run removes its `.tmp` file (TemporaryOutputs); a
/// killed one leaves it, never a half output, and the next run writing in that folder removes it.
public final class AtomicFileWriter {
    public let destination: String
    public let temporaryPath: String
    private var fd: Int32
    private var finished = false
    public private(set) var bytesWritten = 0
    private var direct: DirectWriter?
    /// Appended bytes before this offset have been handed to the disk (`startWriteback`).
    private var writebackStart = 0
    /// Buffered appends start their writeback every this many bytes, so the disk writes while the
    /// producer computes and `commit`'s fsync waits for the last stretch only (it was a fifth of a
    /// 0.5B stack: 61 MB flushed at the end).
    static let writebackStride = 8 << 20

    /// `direct`: stream sequential writes through O_DIRECT where the file system allows it (for
    /// large outputs written once; see DirectWriter). Positioned writes are then unavailable.
    public init(destination: String, direct: Bool = false) throws {
        self.destination = destination
        let url = URL(fileURLWithPath: destination)
        let folder = url.deletingLastPathComponent().path
        temporaryPath = folder + "/." + url.lastPathComponent + "." + StaleTemporaries.uniqueSuffix() + ".tmp"
        StaleTemporaries.removeDead(in: folder)
        let path = temporaryPath
        do {
            fd = try TemporaryOutputs.shared.creating(path) { () throws(SystemCallError) in
                try POSIX.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode: 0o644)
            }
        } catch {
            TemporaryOutputs.shared.unregister(temporaryPath)
            throw OutputError.notWritable(path: destination, folder: folder, reason: error.reason)
        }
        if direct { self.direct = DirectWriter(path: temporaryPath, reportedPath: destination) }
    }

    deinit {
        if !finished { abandon() }
    }

    public func write(_ buffer: UnsafeRawBufferPointer) throws {
        if let direct {
            try direct.append(buffer)
            bytesWritten += buffer.count
            return
        }
        do {
            try POSIX.writeAll(fd, buffer, path: temporaryPath)
        } catch {
            throw FileAccessError(error, reportedAs: destination)
        }
        bytesWritten += buffer.count
        if bytesWritten - writebackStart >= Self.writebackStride {
            POSIX.startWriteback(fd, offset: writebackStart, count: bytesWritten - writebackStart)
            writebackStart = bytesWritten
        }
    }

    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    /// Writes at an absolute offset without moving the append position (used to fill in a
    /// preamble once the rest of the file is known).
    public func write(_ bytes: [UInt8], at offset: Int) throws {
        precondition(direct == nil, "positioned writes need a buffered AtomicFileWriter")
        try bytes.withUnsafeBytes { buffer in
            do throws(SystemCallError) {
                try POSIX.writeAll(fd, buffer, at: offset, path: temporaryPath)
            } catch {
                throw FileAccessError(error, reportedAs: destination)
            }
        }
    }

    /// Flushes buffered direct writes and frees their buffers; the file stays temporary until
    /// `commit`. Writers of several files (sharded checkpoints) call it as each file ends, so only
    /// one file's buffers exist at a time.
    public func finishWriting() throws {
        guard let direct else { return }
        do {
            try direct.finish()
        } catch {
            abandon()
            throw error
        }
        self.direct = nil
    }

    /// Makes the file durable and moves it into place.
    public func commit() throws {
        precondition(!finished)
        try finishWriting()
        do {
            try POSIX.fsync(fd, path: temporaryPath)
        } catch {
            throw FileAccessError(error, reportedAs: destination)
        }
        POSIX.close(fd)
        finished = true
        do {
            try TemporaryOutputs.shared.publish(temporaryPath) { () throws(SystemCallError) in
                try POSIX.rename(temporaryPath, to: destination)
            }
        } catch {
            POSIX.unlink(temporaryPath)
            throw FileAccessError(error, reportedAs: destination)
        }
        syncFolder(of: destination)
    }

    /// Discards everything written so far.
    public func abandon() {
        guard !finished else { return }
        finished = true
        direct = nil
        POSIX.close(fd)
        POSIX.unlink(temporaryPath)
        TemporaryOutputs.shared.unregister(temporaryPath)
    }
}

/// fsync on the folder makes a rename durable.
func syncFolder(of path: String) {
    POSIX.syncFolder(URL(fileURLWithPath: path).deletingLastPathComponent().path)
}
