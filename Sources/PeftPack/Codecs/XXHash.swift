import CXXHash

/// XXH3-64 with seed 0, the checksum of the pack format and of the fixture manifest. Calls the
/// `_dispatch` entry point so Debian's libxxhash uses AVX2 where the CPU has it.
public enum XXH3 {
    public static func hash64(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        XXH3_64bits_dispatch(bytes.baseAddress, bytes.count)
    }

    public static func hash64(_ bytes: [UInt8]) -> UInt64 {
        bytes.withUnsafeBytes { hash64($0) }
    }

    /// XXH3-64 of several buffers as if concatenated, without concatenating them.
    public static func hash64(concatenating parts: [[UInt8]]) -> UInt64 {
        guard let state = XXH3_createState() else { return hash64(parts.flatMap { $0 }) }
        defer { XXH3_freeState(state) }
        XXH3_64bits_reset(state)
        for part in parts { part.withUnsafeBytes { _ = XXH3_64bits_update_dispatch(state, $0.baseAddress, $0.count) } }
        return XXH3_64bits_digest(state)
    }

    /// 16 lowercase hex digits, the form stored in JSON.
    public static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
