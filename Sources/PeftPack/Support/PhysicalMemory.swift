import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The machine's physical memory: the most a single buffer can usefully be. Asking for more gets
/// the process killed by the system, not an error it could report.
enum PhysicalMemory {
    static let bytes: Int = {
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), size = sysconf(Int32(_SC_PAGESIZE))
        guard pages > 0, size > 0 else { return Int.max }
        let (total, overflow) = pages.multipliedReportingOverflow(by: size)
        return overflow ? Int.max : total
    }()

    /// Memory the system can give without swapping (MemAvailable of /proc/meminfo); nil where
    /// the system does not say.
    static var available: Int? {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }),
              let kilobytes = Int(line.split(separator: " ").dropFirst().first ?? "")
        else { return nil }
        return kilobytes * 1024
    }
}
