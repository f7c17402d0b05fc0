#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
@testable import PeftPack

/// The one seam every file system call goes through: failures become one typed error naming the
/// operation and the path, and the messages users saw before are unchanged.
@Suite("POSIX seam")
struct POSIXSeamTests {
    @Test func failedWriteNamesOperationPathAndReason() throws {
        let fd = try POSIX.open("/dev/full", O_WRONLY | O_CLOEXEC)
        defer { POSIX.close(fd) }
        let bytes = [UInt8](repeating: 1, count: 16)
        #expect(throws: SystemCallError("write", "/dev/full", code: ENOSPC)) {
            try bytes.withUnsafeBytes { try POSIX.writeAll(fd, $0, path: "/dev/full") }
        }
        let error = SystemCallError("write", "/dev/full", code: ENOSPC)
        #expect("\(FileAccessError(error, reportedAs: "out/model.safetensors"))"
            == "out/model.safetensors: write failed: No space left on device")
    }

    @Test func failedOpenAndRenameAreTyped() {
        let missing = Fixtures.temporaryDirectory() + "/missing/file"
        #expect(throws: SystemCallError("open", missing, code: ENOENT)) { try POSIX.open(missing, O_RDONLY) }
        #expect(throws: SystemCallError("rename", missing, code: ENOENT)) { try POSIX.rename(missing + ".a", to: missing) }
        let mapError = #expect(throws: FileAccessError.self) { try MappedFile(path: missing) }
        #expect(mapError.map { "\($0)" } == "\(missing): cannot open: No such file or directory")
    }
}
