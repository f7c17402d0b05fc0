import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A single self-overwriting status line on stderr, shown only when stderr is a terminal, so
/// long work is visible interactively and logs stay clean otherwise.
final class ProgressLine: @unchecked Sendable {
    private let enabled: Bool
    private let lock = NSLock()
    private var lastDraw = Date.distantPast
    private let label: String

    init(label: String, enabled: Bool = true) {
        self.label = label
        self.enabled = enabled && isatty(STDERR_FILENO) != 0
    }

    func update(done: Int, total: Int, detail: String = "") {
        guard enabled else { return }
        lock.lock()
        defer { lock.unlock() }
        let now = Date()
        guard done == total || now.timeIntervalSince(lastDraw) > 0.1 else { return }
        lastDraw = now
        let percent = total > 0 ? done * 100 / total : 100
        let text = "\r\u{1B}[2K\(label) \(done)/\(total) (\(percent)%) \(detail)"
        FileHandle.standardError.write(Data(text.utf8))
    }

    func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[2K".utf8))
    }
}
