import Foundation

/// The cores this process may run on, read once: on Linux `activeProcessorCount` reads two cgroup
/// files on every call, which per-tensor callers made a measurable share of a small stack.
public enum Cores {
    public static let active = ProcessInfo.processInfo.activeProcessorCount
}
