/// Constants of the .peftpack format (spec/FORMAT.md), shared by reader and writer.
public enum PackFormat {
    /// 0x89 'P' 'E' 'F' 'T' 'P' 'K' 0x0A: a high byte so text tools see binary, a newline to
    /// catch line-ending conversion, as PNG does.
    public static let magic: [UInt8] = [0x89, 0x50, 0x45, 0x46, 0x54, 0x50, 0x4B, 0x0A]
    public static let majorVersion: UInt16 = 1
    public static let minorVersion: UInt16 = 2
    public static let preambleSize = 64
    public static let alignment = 64
    public static let defaultChunkSize = 1 << 20
    public static let maximumChunkSize = 64 << 20
    public static let maximumStoredHeader = 64 << 20
    public static let maximumRawHeader = 256 << 20
    /// Raw bytes per stored byte a zstd frame can reach: more than any frame can decode to, so a
    /// size claim beyond it is refused before anything is allocated from it.
    public static let maximumExpansion = 65536
    /// A plane is stored compressed only when that saves more than this share of its size.
    public static let minimumSaving = 0.02

    public enum Codec: String, Sendable {
        case raw
        case zstd
    }

    public enum Transform: String, Sendable {
        case none
        case planes
    }
}

/// Little-endian field access for the fixed-size preamble.
struct LittleEndianWriter {
    var bytes: [UInt8] = []
    mutating func append<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes += $0 }
    }
}

extension UnsafeRawBufferPointer {
    func littleEndian<T: FixedWidthInteger>(at offset: Int, as: T.Type) -> T {
        T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}
