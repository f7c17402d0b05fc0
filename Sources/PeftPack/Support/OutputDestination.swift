#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Why an output cannot be written where the user asked.
public enum OutputError: UserFacingError, Equatable {
    case exists(path: String)
    case wrongKind(path: String, isFolder: Bool)
    /// A device node, fifo or socket: replacing it would replace a system file or hang on a reader.
    case special(path: String, what: String)
    case empty
    case notWritable(path: String, folder: String, reason: String)

    public var description: String {
        switch self {
        case .exists(let path):
            "\(path): already exists"
        case .wrongKind(let path, let isFolder):
            isFolder ? "\(path): is a folder, and this command writes a file; refusing to replace it (give a file path)"
                : "\(path): is a file, and this command writes a folder; refusing to replace it (give a folder path)"
        case .special(let path, let what):
            "\(path): is \(what), not a regular file or folder; refusing to write over it (give a file or folder path)"
        case .empty:
            "the output path is empty; give a file or folder path"
        case .notWritable(let path, let folder, let reason):
            "\(path): cannot be written: cannot create files in \(folder) (\(reason))"
        }
    }
}

/// The one rule every writing command follows for its output, checked before any work is done:
/// never an input, never an existing path unless `force` (and never a folder for a file or the
/// reverse, even with `force`), and a folder that can really be written. Stale temporaries of
/// killed writers in that folder are removed on the way.
public enum OutputDestination {
    public enum Kind {
        case file
        case folder
    }

    public static func claim(_ path: String, as kind: Kind, force: Bool, inputs: [String]) throws {
        guard !path.isEmpty else { throw OutputError.empty }
        try InputProtection.check(output: path, inputs: inputs)
        if POSIX.linkStatus(path) != nil {
            let type = POSIX.status(path).map { $0.st_mode & S_IFMT } ?? S_IFREG
            if let what = specialFileKind(type) { throw OutputError.special(path: path, what: what) }
            guard force else { throw OutputError.exists(path: path) }
            let isFolder = type == S_IFDIR
            if isFolder != (kind == .folder) { throw OutputError.wrongKind(path: path, isFolder: isFolder) }
        }
        let folder = parentFolder(of: path)
        try createFolders(folder, for: path)
        StaleTemporaries.removeDead(in: folder)
        try probeWritable(folder, for: path)
    }

    /// What a file of this type is, unless it is a regular file or a folder (or a dangling link,
    /// whose type is taken as a regular file's: the writer replaces the link itself).
    static func specialFileKind(_ type: mode_t) -> String? {
        switch type {
        case S_IFREG, S_IFDIR: nil
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFIFO: "a fifo"
        case S_IFSOCK: "a socket"
        default: "not a regular file"
        }
    }

    static func parentFolder(of path: String) -> String {
        URL(fileURLWithPath: path).standardizedFileURL.deletingLastPathComponent().path
    }

    /// `mkdir -p`: each missing folder on the way, with the first failure named.
    static func createFolders(_ folder: String, for output: String) throws {
        if let status = POSIX.status(folder) {
            guard POSIX.isFolder(status) else {
                throw OutputError.notWritable(path: output, folder: folder, reason: "it is not a folder")
            }
            return
        }
        let parent = URL(fileURLWithPath: folder).deletingLastPathComponent().path
        if parent != folder { try createFolders(parent, for: output) }
        do {
            try POSIX.makeFolder(folder)
        } catch {
            throw OutputError.notWritable(path: output, folder: parent, reason: error.reason)
        }
    }

    /// Permission bits do not say whether root can write (read-only mounts, /sys, /proc): only
    /// creating a file does. The probe is a registered temporary: an interruption removes it, and
    /// a kill leaves nothing that the next run would not remove.
    static func probeWritable(_ folder: String, for output: String) throws {
        let probe = folder + "/." + URL(fileURLWithPath: output).lastPathComponent + "." + StaleTemporaries.uniqueSuffix() + ".tmp"
        defer { TemporaryOutputs.shared.unregister(probe) }
        do {
            let fd = try TemporaryOutputs.shared.creating(probe) { () throws(SystemCallError) in
                try POSIX.open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode: 0o644)
            }
            POSIX.close(fd)
            POSIX.unlink(probe)
        } catch {
            throw OutputError.notWritable(path: output, folder: folder, reason: error.reason)
        }
    }
}
