#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Refuses an output that would replace an input. Outputs are renamed into place, so what must
/// not happen is the rename landing on an input's name: the same path spelled differently, a
/// symbolic link on either side, the same file under another name, an input folder's own file,
/// or a folder that holds an input.
public enum InputProtection {
    public static func check(output: String, inputs: [String]) throws {
        let target = resolved(output)
        let targetExists = FileManager.default.fileExists(atPath: output)
        let targetIdentity = identity(output)
        for input in inputs {
            let source = resolved(input)
            var isFolder: ObjCBool = false
            let sourceExists = FileManager.default.fileExists(atPath: source, isDirectory: &isFolder)
            let replacesInput = target == source
                || (targetIdentity != nil && targetIdentity == identity(input))
                || (targetExists && sourceExists && isFolder.boolValue && target.hasPrefix(source + "/"))
                || (targetExists && source.hasPrefix(target + "/"))
            if replacesInput {
                throw InputError(file: output, problem: "is an input (or holds one, or lies in one): \(input); refusing to write over it")
            }
        }
    }

    /// The absolute path with every symbolic link resolved; for a path that does not exist yet,
    /// its folder resolved and its own name appended.
    static func resolved(_ path: String) -> String {
        let absolute = URL(fileURLWithPath: path).standardizedFileURL.path
        if let real = POSIX.realPath(absolute) { return real }
        let url = URL(fileURLWithPath: absolute)
        let parent = url.deletingLastPathComponent().path
        guard parent != absolute else { return absolute }
        return (POSIX.realPath(parent) ?? resolved(parent)) + "/" + url.lastPathComponent
    }

    /// Device and inode of what the path names (following links), or nil if it does not exist.
    static func identity(_ path: String) -> [UInt64]? {
        guard let status = POSIX.status(path) else { return nil }
        return [UInt64(status.st_dev), UInt64(status.st_ino)]
    }
}
