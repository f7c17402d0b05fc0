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

    /// `direct`: stream sequential writes through O_DIRECT where the file system allows it (for
    /// large outputs written once; see DirectWriter). Positioned writes are then unavailable.
    public init(destination: String, direct: Bool = false) throws {
        self.destination = destination
        let url = URL(fileURLWithPath: destination)
        let folder = url.deletingLastPathComponent().path
        temporaryPath = folder + "/." + url.lastPathComponent + "." + StaleTemporaries.uniqueSuffix() + ".tmp"
        StaleTemporaries.removeDead(in: folder)
        let path = temporaryPath
        fd = TemporaryOutputs.shared.creating(path) { open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644) }
        guard fd >= 0 else {
            let reason = systemErrorText()
            TemporaryOutputs.shared.unregister(temporaryPath)
            throw OutputError.notWritable(path: destination, folder: folder, reason: reason)
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
        var remaining = buffer
        while !remaining.isEmpty {
            let written = Glibc.write(fd, remaining.baseAddress, remaining.count)
            if written < 0 {
                if errno == EINTR { continue }
                throw FileAccessError.ioFailed(path: destination, operation: "write", reason: systemErrorText())
            }
            remaining = UnsafeRawBufferPointer(rebasing: remaining[written...])
            bytesWritten += written
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
            var done = 0
            while done < buffer.count {
                let written = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
                if written < 0 {
                    if errno == EINTR { continue }
                    throw FileAccessError.ioFailed(path: destination, operation: "write", reason: systemErrorText())
                }
                done += written
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
        guard fsync(fd) == 0 else {
            throw FileAccessError.ioFailed(path: destination, operation: "fsync", reason: systemErrorText())
        }
        close(fd)
        finished = true
        let failure: String? = TemporaryOutputs.shared.publish(temporaryPath) {
            rename(temporaryPath, destination) == 0 ? nil : systemErrorText()
        }
        if let failure {
            unlink(temporaryPath)
            throw FileAccessError.ioFailed(path: destination, operation: "rename", reason: failure)
        }
        syncFolder(of: destination)
    }

    /// Discards everything written so far.
    public func abandon() {
        guard !finished else { return }
        finished = true
        direct = nil
        close(fd)
        unlink(temporaryPath)
        TemporaryOutputs.shared.unregister(temporaryPath)
    }
}

/// fsync on the folder makes a rename durable.
func syncFolder(of path: String) {
    let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
    let fd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { return }
    fsync(fd)
    close(fd)
}
