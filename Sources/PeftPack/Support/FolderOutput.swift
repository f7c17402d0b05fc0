#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Writes a whole output folder atomically: everything goes into a hidden temporary folder beside
/// the destination, which is renamed into place only when complete. The destination follows the
/// one output rule (OutputDestination): replaced only with `force`, never an input or inside one.
public enum FolderOutput {
    public static func write(to destination: String, force: Bool, protecting inputs: [String],
                             _ body: (String) throws -> Void) throws -> [String] {
        let target = URL(fileURLWithPath: destination).standardizedFileURL.path
        try OutputDestination.claim(destination, as: .folder, force: force, inputs: inputs)
        // A new folder inside an input folder would change what that input holds.
        for input in inputs where InputProtection.resolved(destination).hasPrefix(InputProtection.resolved(input) + "/") {
            throw InputError(file: destination, problem: "lies in the input \(input); refusing to write into it")
        }
        let parent = OutputDestination.parentFolder(of: target)
        let temporary = parent + "/." + URL(fileURLWithPath: target).lastPathComponent + ".tmp-" + StaleTemporaries.uniqueSuffix()
        do {
            try TemporaryOutputs.shared.creating(temporary) { () throws(SystemCallError) in try POSIX.makeNewFolder(temporary) }
        } catch {
            TemporaryOutputs.shared.unregister(temporary)
            throw OutputError.notWritable(path: destination, folder: parent, reason: error.reason)
        }
        do {
            try body(temporary)
            let written = try FileManager.default.contentsOfDirectory(atPath: temporary).sorted()
            try replace(target, with: temporary, destination: destination)
            return written
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            TemporaryOutputs.shared.unregister(temporary)
            throw (error as? FileAccessError)?.naming(target, for: temporary) ?? error
        }
    }

    /// Moves the finished folder into place. Both renames happen with the temporaries registry
    /// locked, so an interrupting signal never finds the old folder moved aside and the new one
    /// not yet in place; the old folder is then removed as a registered temporary.
    static func replace(_ target: String, with temporary: String, destination: String) throws {
        let old = temporary + ".old"
        do {
            try TemporaryOutputs.shared.publish(temporary) { () throws(SystemCallError) in
                guard POSIX.linkStatus(target) != nil else { return try POSIX.rename(temporary, to: target) }
                try POSIX.rename(target, to: old)
                TemporaryOutputs.shared.registerLocked(old)
                do throws(SystemCallError) {
                    try POSIX.rename(temporary, to: target)
                } catch {
                    try? POSIX.rename(old, to: target)
                    throw error
                }
            }
        } catch {
            TemporaryOutputs.shared.unregister(old)
            throw FileAccessError(error, reportedAs: destination)
        }
        syncFolder(of: target)
        try? FileManager.default.removeItem(atPath: old)
        TemporaryOutputs.shared.unregister(old)
    }
}

extension FileAccessError {
    /// The same error about the file's final place: a user knows `merged/model.safetensors`, not
    /// the hidden folder it was written in.
    func naming(_ target: String, for temporary: String) -> FileAccessError {
        func moved(_ path: String) -> String { path.hasPrefix(temporary + "/") ? target + path.dropFirst(temporary.count) : path }
        switch self {
        case .cannotOpen(let path, let reason): return .cannotOpen(path: moved(path), reason: reason)
        case .cannotMap(let path, let reason): return .cannotMap(path: moved(path), reason: reason)
        case .ioFailed(let path, let operation, let reason): return .ioFailed(path: moved(path), operation: operation, reason: reason)
        }
    }
}

/// The POSIX reason inside an error Foundation's file calls report ("No space left on device").
public func systemErrorText(of error: CocoaError) -> String {
    (error.underlying as? POSIXError).map { systemErrorText($0.code.rawValue) } ?? "\(error.code)"
}
