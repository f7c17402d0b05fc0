/// The subset of ZIP that torch.save writes and StoredZipArchive reads: stored (uncompressed)
/// entries whose data starts on a 64-byte boundary (padding in an "FB" extra field, as PyTorch's
/// writer does, so a reader may map storages in place), CRC-32 and sizes in the local headers, no
/// timestamps (the same entries always give the same bytes). No ZIP64: an archive over 4 GiB is
/// refused.
struct StoredZipWriter {
    static let alignment = 64
    static let localHeaderSignature: UInt32 = 0x0403_4B50
    static let centralHeaderSignature: UInt32 = 0x0201_4B50
    static let endOfCentralDirectorySignature: UInt32 = 0x0605_4B50
    static let paddingFieldID: UInt16 = 0x4246  // "FB"

    private var bytes: [UInt8] = []
    private var central: [UInt8] = []
    private var count = 0

    mutating func add(_ name: String, _ data: [UInt8]) throws {
        let nameBytes = Array(name.utf8)
        let offset = bytes.count
        let headerEnd = offset + 30 + nameBytes.count + 4
        let padding = (Self.alignment - headerEnd % Self.alignment) % Self.alignment
        let crc = CRC32.checksum(data)
        guard offset <= Int(UInt32.max), data.count <= Int(UInt32.max) - headerEnd - padding else {
            throw UsageError("\(name): a torch.save archive over 4 GiB needs ZIP64, which peftpack does not write")
        }
        append(&bytes, Self.localHeaderSignature)
        append(&bytes, UInt16(0))  // version needed (PyTorch writes 0)
        append(&bytes, UInt16(0))  // flags
        append(&bytes, UInt16(0))  // method: stored
        append(&bytes, UInt32(0))  // time and date
        append(&bytes, crc)
        append(&bytes, UInt32(data.count))
        append(&bytes, UInt32(data.count))
        append(&bytes, UInt16(nameBytes.count))
        append(&bytes, UInt16(4 + padding))
        bytes += nameBytes
        append(&bytes, Self.paddingFieldID)
        append(&bytes, UInt16(padding))
        bytes += [UInt8](repeating: UInt8(ascii: "Z"), count: padding)
        bytes += data

        append(&central, Self.centralHeaderSignature)
        append(&central, UInt16(0))  // made by
        append(&central, UInt16(0))  // version needed
        append(&central, UInt16(0))  // flags
        append(&central, UInt16(0))  // method
        append(&central, UInt32(0))  // time and date
        append(&central, crc)
        append(&central, UInt32(data.count))
        append(&central, UInt32(data.count))
        append(&central, UInt16(nameBytes.count))
        append(&central, UInt16(0))  // extra
        append(&central, UInt16(0))  // comment
        append(&central, UInt16(0))  // disk
        append(&central, UInt16(0))  // internal attributes
        append(&central, UInt32(0))  // external attributes
        append(&central, UInt32(offset))
        central += nameBytes
        count += 1
    }

    mutating func finish() throws -> [UInt8] {
        let directoryOffset = bytes.count
        guard count < 0xFFFF, directoryOffset + central.count <= Int(UInt32.max) else {
            throw UsageError("a torch.save archive of \(count) entries or over 4 GiB needs ZIP64, which peftpack does not write")
        }
        var out = bytes + central
        append(&out, Self.endOfCentralDirectorySignature)
        append(&out, UInt16(0))
        append(&out, UInt16(0))
        append(&out, UInt16(count))
        append(&out, UInt16(count))
        append(&out, UInt32(central.count))
        append(&out, UInt32(directoryOffset))
        append(&out, UInt16(0))
        return out
    }

    private func append<T: FixedWidthInteger>(_ buffer: inout [UInt8], _ value: T) {
        withUnsafeBytes(of: value.littleEndian) { buffer += $0 }
    }
}

/// CRC-32 (ISO-HDLC, reflected polynomial 0xEDB88320), which ZIP readers check on every entry.
enum CRC32 {
    static let table: [UInt32] = (0..<256).map { index in
        var value = UInt32(index)
        for _ in 0..<8 { value = value & 1 != 0 ? 0xEDB8_8320 ^ (value >> 1) : value >> 1 }
        return value
    }

    static func checksum(_ data: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in data { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }
}
