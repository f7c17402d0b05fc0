#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Every hidden temporary file or folder this process is writing, so that an interrupted run
/// (SIGINT, SIGTERM, SIGHUP: the CLI's signal thread) removes them before it exits instead of
/// leaving hundreds of megabytes beside the output.
///
/// Publishing (the rename into place) happens with the registry locked, and the cleanup keeps it
/// locked until the process exits: an interrupted run leaves either its complete output or none,
/// and nothing beside it.
public final class TemporaryOutputs: @unchecked Sendable {
    public static let shared = TemporaryOutputs()

    private let lock = NSLock()
    private var paths: Set<String> = []

    /// Registers `path` and runs `make` (which creates it) with the registry locked: once a cleanup
    /// has begun, no new temporary can appear behind it.
    func creating<T, Failure: Error>(_ path: String, _ make: () throws(Failure) -> T) throws(Failure) -> T {
        lock.lock()
        defer { lock.unlock() }
        paths.insert(path)
        return try make()
    }

    func unregister(_ path: String) {
        lock.lock()
        defer { lock.unlock() }
        paths.remove(path)
    }

    /// Inside `publish`: a temporary the move itself creates (a replaced folder moved aside).
    func registerLocked(_ path: String) {
        paths.insert(path)
    }

    /// Runs `move` (which turns `temporary` into the output) so a cleanup sees the temporary
    /// either before or after, never half-moved; `temporary` is no longer registered afterwards.
    func publish<T, Failure: Error>(_ temporary: String, _ move: () throws(Failure) -> T) throws(Failure) -> T {
        lock.lock()
        defer { lock.unlock() }
        paths.remove(temporary)
        return try move()
    }

    /// For the signal thread, just before the process exits: removes every registered temporary
    /// and returns with the registry still locked, so no writer publishes or registers anything
    /// more. Never call it from a process that goes on.
    public func removeAllForExit() {
        lock.lock()
        for path in paths.sorted(by: >) {
            // A writer may still be adding files to a folder being removed: retry until it is gone.
            for _ in 0..<5 {
                if (try? FileManager.default.removeItem(atPath: path)) != nil || !exists(path) { break }
            }
        }
    }

    private func exists(_ path: String) -> Bool {
        POSIX.linkStatus(path) != nil
    }
}

/// Temporary outputs of runs that were killed (SIGKILL, power loss) before they could clean up.
/// Their names carry the writer's process id; every writing run removes, in its output folder,
/// those whose process is gone (whatever output they were for), and leaves a live writer's alone.
enum StaleTemporaries {
    /// "PID-RANDOM": the part of a temporary's name that says who writes it.
    static func uniqueSuffix() -> String {
        "\(POSIX.processID)-\(UInt64.random(in: 0...UInt64.max))"
    }

    static func removeDead(in folder: String) {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: folder) else { return }
        for entry in entries {
            guard let pid = writerProcess(of: entry), pid != POSIX.processID, !isRunning(pid) else { continue }
            try? FileManager.default.removeItem(atPath: folder + "/" + entry)
        }
    }

    /// A killed process stays a zombie until its parent reaps it; it writes nothing more.
    static func isRunning(_ pid: pid_t) -> Bool {
        if !POSIX.processExists(pid) { return false }
        #if os(Linux)
        if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
           let close = stat.lastIndex(of: ")") {
            let state = stat[stat.index(after: close)...].drop(while: { $0 == " " }).first
            if state == "Z" || state == "X" { return false }
        }
        #endif
        return true
    }

    /// The writer of a temporary: `.NAME.PID-RANDOM.tmp` (files), `.NAME.tmp-PID-RANDOM` and its
    /// `.old` (folders); nil for any other name.
    static func writerProcess(of entry: String) -> pid_t? {
        guard entry.hasPrefix(".") else { return nil }
        var rest = Substring(entry.dropFirst())
        let suffix: Substring
        if rest.hasSuffix(".tmp") {
            rest = rest.dropLast(4)
            guard let dot = rest.lastIndex(of: ".") else { return nil }
            suffix = rest[rest.index(after: dot)...]
            rest = rest[..<dot]
        } else {
            if rest.hasSuffix(".old") { rest = rest.dropLast(4) }
            guard let marker = rest.range(of: ".tmp-", options: .backwards) else { return nil }
            suffix = rest[marker.upperBound...]
            rest = rest[..<marker.lowerBound]
        }
        let parts = suffix.split(separator: "-", omittingEmptySubsequences: false)
        guard !rest.isEmpty, parts.count == 2, let pid = pid_t(parts[0]), pid > 0, UInt64(parts[1]) != nil else { return nil }
        return pid
    }
}
