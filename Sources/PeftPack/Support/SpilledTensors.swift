#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Tensors computed before the file they belong in can be started, parked in one scratch file
/// instead of memory: a safetensors header needs every tensor's size first, and a requantized
/// model's sizes are known only once each weight is made (a quant state's length, a promoted
/// weight's dtype). Written once in order, then read back through a memory map; the caller owns
/// the scratch file's folder and removes it.
final class SpilledTensors {
    private let path: String
    private var fd: Int32
    private var end = 0
    private var entries: [String: (info: TensorInfo, offset: Int)] = [:]
    private var mapped: MappedFile?

    init(path: String) throws {
        self.path = path
        do {
            fd = try POSIX.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode: 0o600)
        } catch {
            throw FileAccessError.cannotOpen(path: path, reason: error.reason)
        }
    }

    deinit { if fd >= 0 { POSIX.close(fd) } }

    func append(_ name: String, _ tensor: HostTensor) throws {
        precondition(mapped == nil && entries[name] == nil, "tensor \(name) spilled twice or after reading")
        let failure = tensor.bytes.withUnsafeBytes { bytes -> SystemCallError? in
            do throws(SystemCallError) { try POSIX.writeAll(fd, bytes, at: end, path: path) } catch { return error }
            return nil
        }
        if let failure { throw FileAccessError(failure) }
        entries[name] = (TensorInfo(name: name, dtype: tensor.dtype, shape: tensor.shape), end)
        end += tensor.bytes.count
    }

    func info(_ name: String) -> TensorInfo? { entries[name]?.info }

    /// The bytes of a spilled tensor; the first call ends writing.
    func withBytes<R>(_ name: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        guard let entry = entries[name] else { preconditionFailure("tensor \(name) was never spilled") }
        if mapped == nil {
            POSIX.close(fd)
            fd = -1
            mapped = try MappedFile(path: path)
        }
        return try body(mapped!.slice(offset: entry.offset, count: entry.info.byteCount ?? 0))
    }
}
