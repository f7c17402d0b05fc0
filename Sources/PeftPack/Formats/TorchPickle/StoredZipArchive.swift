/// The subset of ZIP that `torch.save` writes: stored (uncompressed) entries, with ZIP64 fields
/// when large. Every offset and size is checked against the file before it is used.
struct StoredZipArchive {
    struct Entry {
        var name: String
        var dataOffset: Int
        var size: Int
    }

    let file: String
    let bytes: UnsafeRawBufferPointer
    private(set) var entries: [String: Entry] = [:]
    private(set) var names: [String] = []

    init(file: String, bytes: UnsafeRawBufferPointer) throws {
        self.file = file
        self.bytes = bytes
        func fail(_ problem: String) -> InputError { InputError(file: file, problem: problem) }
        func u16(_ at: Int) -> Int { Int(bytes.littleEndian(at: at, as: UInt16.self)) }
        func u32(_ at: Int) -> Int { Int(bytes.littleEndian(at: at, as: UInt32.self)) }
        func u64(_ at: Int) throws -> Int {
            let value = bytes.littleEndian(at: at, as: UInt64.self)
            guard value <= UInt64(bytes.count) else { throw fail("ZIP field at \(at) points past the end of the file") }
            return Int(value)
        }

        guard bytes.count >= 22 else { throw fail("too short to be a torch.save zip archive") }
        var eocd = -1
        var position = bytes.count - 22
        let lowest = max(0, bytes.count - 22 - 65535)
        while position >= lowest {
            if bytes.littleEndian(at: position, as: UInt32.self) == 0x0605_4B50 { eocd = position; break }
            position -= 1
        }
        guard eocd >= 0 else { throw fail("no ZIP end-of-central-directory record (not a torch.save file, or truncated)") }
        var count = u16(eocd + 10)
        var directorySize = u32(eocd + 12)
        var directoryOffset = u32(eocd + 16)
        if count == 0xFFFF || directorySize == 0xFFFF_FFFF || directoryOffset == 0xFFFF_FFFF {
            let locator = eocd - 20
            guard locator >= 0, bytes.littleEndian(at: locator, as: UInt32.self) == 0x0706_4B50 else {
                throw fail("ZIP64 locator missing")
            }
            let record = try u64(locator + 8)
            guard record + 56 <= bytes.count, bytes.littleEndian(at: record, as: UInt32.self) == 0x0606_4B50 else {
                throw fail("ZIP64 end-of-central-directory record missing")
            }
            count = try u64(record + 32)
            directorySize = try u64(record + 40)
            directoryOffset = try u64(record + 48)
        }
        guard directoryOffset <= bytes.count, directorySize <= bytes.count - directoryOffset, count <= directorySize / 46 + 1 else {
            throw fail("central directory lies outside the file")
        }
        var cursor = directoryOffset
        for _ in 0..<count {
            guard cursor + 46 <= directoryOffset + directorySize, bytes.littleEndian(at: cursor, as: UInt32.self) == 0x0201_4B50 else {
                throw fail("central directory entry at \(cursor) is damaged")
            }
            let method = u16(cursor + 10)
            var size = u32(cursor + 20)
            let uncompressed = u32(cursor + 24)
            let nameLength = u16(cursor + 28), extraLength = u16(cursor + 30), commentLength = u16(cursor + 32)
            var localOffset = u32(cursor + 42)
            let nameStart = cursor + 46
            guard nameStart + nameLength + extraLength + commentLength <= bytes.count else { throw fail("central directory entry runs past the file") }
            let name = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[nameStart..<(nameStart + nameLength)]), as: UTF8.self)
            var extra = nameStart + nameLength
            let extraEnd = extra + extraLength
            while extra + 4 <= extraEnd {
                let id = u16(extra), length = u16(extra + 2)
                if id == 0x0001 {
                    var field = extra + 4
                    if uncompressed == 0xFFFF_FFFF, field + 8 <= extraEnd { field += 8 }
                    if size == 0xFFFF_FFFF, field + 8 <= extraEnd { size = try u64(field); field += 8 }
                    if localOffset == 0xFFFF_FFFF, field + 8 <= extraEnd { localOffset = try u64(field) }
                }
                extra += 4 + length
            }
            guard method == 0 else { throw fail("entry \(name) is compressed (method \(method)); torch.save stores entries uncompressed") }
            guard localOffset + 30 <= bytes.count, bytes.littleEndian(at: localOffset, as: UInt32.self) == 0x0403_4B50 else {
                throw fail("local header of entry \(name) is missing")
            }
            let dataOffset = localOffset + 30 + u16(localOffset + 26) + u16(localOffset + 28)
            guard dataOffset <= bytes.count, size <= bytes.count - dataOffset else { throw fail("entry \(name) runs past the end of the file") }
            guard entries[name] == nil else { throw fail("entry \(name) appears twice") }
            entries[name] = Entry(name: name, dataOffset: dataOffset, size: size)
            names.append(name)
            cursor = nameStart + nameLength + extraLength + commentLength
        }
    }

    func data(_ entry: Entry) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[entry.dataOffset..<(entry.dataOffset + entry.size)])
    }
}
