import Foundation

/// Reads a .peftpack file: the preamble and header are read and validated at open (no tensor data
/// is touched), each tensor is decoded on request, and every checksum is verified on the way.
public final class PackReader: @unchecked Sendable {
    public let path: String
    public let majorVersion: UInt16
    public let minorVersion: UInt16
    /// The header's document exactly as stored, unknown members included.
    public let document: StrictJSON
    public let tensors: [PackTensorEntry]
    public let storedHeaderBytes: Int
    private let mapped: MappedFile
    private let index: [String: Int]

    #if FUZZING
    /// Fuzzing builds only (the FUZZING_BUILD_MODE idiom of libpng and zlib): random mutations
    /// never carry matching chunk checksums, so without this the fuzzer could not reach the
    /// decoders and size checks behind them. The preamble and header checksums stay on; the
    /// structure-aware target recomputes them.
    public nonisolated(unsafe) static var fuzzingSkipsChunkChecksums = false
    #endif

    private static func chunkChecksumMatches(_ computed: UInt64, _ stored: UInt64) -> Bool {
        #if FUZZING
        if fuzzingSkipsChunkChecksums { return true }
        #endif
        return computed == stored
    }

    public init(path: String) throws {
        self.path = path
        mapped = try MappedFile(path: path)
        let bytes = mapped.bytes
        func fail(_ problem: String) -> InputError { InputError(file: path, problem: problem) }

        guard bytes.count >= PackFormat.preambleSize else {
            throw fail("file is \(bytes.count) bytes, shorter than the \(PackFormat.preambleSize)-byte preamble of a .peftpack")
        }
        guard Array(bytes[0..<8]) == PackFormat.magic else { throw fail("not a .peftpack file (wrong magic bytes)") }
        let major = bytes.littleEndian(at: 8, as: UInt16.self)
        let minor = bytes.littleEndian(at: 10, as: UInt16.self)
        guard XXH3.hash64(UnsafeRawBufferPointer(rebasing: bytes[0..<56])) == bytes.littleEndian(at: 56, as: UInt64.self) else {
            throw fail("preamble checksum mismatch: the file is damaged")
        }
        guard major == PackFormat.majorVersion else {
            throw fail("pack format \(major).\(minor) is \(major > PackFormat.majorVersion ? "newer than" : "not readable by") this peftpack (reads \(PackFormat.majorVersion).x); upgrade peftpack")
        }
        majorVersion = major
        minorVersion = minor
        let headerOffset = bytes.littleEndian(at: 16, as: UInt64.self)
        let storedLength = bytes.littleEndian(at: 24, as: UInt64.self)
        let rawLength = bytes.littleEndian(at: 32, as: UInt64.self)
        guard storedLength <= UInt64(PackFormat.maximumStoredHeader), rawLength <= UInt64(PackFormat.maximumRawHeader) else {
            throw fail("header claims \(storedLength) stored / \(rawLength) raw bytes, beyond the format's limits")
        }
        guard headerOffset >= UInt64(PackFormat.preambleSize), headerOffset <= UInt64(bytes.count),
              storedLength == UInt64(bytes.count) - headerOffset else {
            throw fail("header at \(headerOffset) with \(storedLength) bytes does not end the \(bytes.count)-byte file (truncated or damaged)")
        }
        // The frame cannot expand further than any zstd frame can (spec §7), so a tiny file cannot
        // make the reader allocate the 256 MiB the limit allows.
        guard storedLength > 0, rawLength <= storedLength * UInt64(PackFormat.maximumExpansion) else {
            throw fail("header claims \(rawLength) raw bytes from \(storedLength) stored (beyond any zstd ratio)")
        }
        let stored = UnsafeRawBufferPointer(rebasing: bytes[Int(headerOffset)...])
        guard XXH3.hash64(stored) == bytes.littleEndian(at: 40, as: UInt64.self) else {
            throw fail("header checksum mismatch: the file is damaged")
        }
        var raw = [UInt8](repeating: 0, count: Int(rawLength))
        do {
            try raw.withUnsafeMutableBytes { try Zstd.decompress(stored, into: $0) }
        } catch {
            throw fail("header does not decode: \(error)")
        }
        let json: StrictJSON
        do {
            json = try StrictJSON.parse(raw)
        } catch {
            throw fail("header is not valid JSON: \(error)")
        }
        guard let document = json["document"], document.objectMembers != nil else { throw fail("header has no document object") }
        guard let items = json["tensors"]?.arrayValue else { throw fail("header has no tensors array") }
        storedHeaderBytes = Int(storedLength)
        self.document = document
        var entries: [PackTensorEntry] = []
        var index: [String: Int] = [:]
        var dataEnd = PackFormat.preambleSize
        for item in items {
            let entry = try PackIndexParser.entry(item, file: path)
            guard index[entry.name] == nil else { throw fail("tensor \(entry.name) appears twice in the index") }
            for (number, chunk) in entry.chunks.enumerated() {
                guard chunk.offset >= dataEnd, chunk.offset % PackFormat.alignment == 0 else {
                    throw fail("tensor \(entry.name) chunk \(number) at offset \(chunk.offset) overlaps earlier data or is misaligned")
                }
                let (end, overflow) = chunk.offset.addingReportingOverflow(chunk.storedLength)
                guard !overflow, end <= Int(headerOffset) else {
                    throw fail("tensor \(entry.name) chunk \(number) runs past the data section")
                }
                dataEnd = end
            }
            index[entry.name] = entries.count
            entries.append(entry)
        }
        tensors = entries
        self.index = index
    }

    public func entry(named name: String) -> PackTensorEntry? {
        index[name].map { tensors[$0] }
    }

    public var fileSize: Int { mapped.size }

    private func requireEntry(_ name: String) throws -> PackTensorEntry {
        guard let entry = entry(named: name) else {
            throw InputError(file: path, problem: "no tensor named \(name)")
        }
        return entry
    }

    /// Decodes a tensor, verifying every chunk's stored and decoded checksums.
    public func readTensor(_ name: String) throws -> HostTensor {
        let entry = try requireEntry(name)
        try checkClaims(entry)
        defer { releasePages(entry) }
        let bytes = try [UInt8](unsafeUninitializedCapacity: entry.rawBytes) { buffer, initialized in
            try decode(entry, into: UnsafeMutableRawBufferPointer(buffer))
            initialized = entry.rawBytes
        }
        return HostTensor(dtype: entry.dtype, shape: entry.shape, bytes: bytes)
    }

    /// What must hold before a tensor's buffer is allocated. Its size comes from the index, whose
    /// ratio limit still lets a small file describe a huge tensor (all zeros legitimately
    /// compress 30,000-fold), so: every zstd frame must declare the size the index gives its
    /// plane (read from the frame headers alone, a page per chunk), and the whole must fit in
    /// this machine's memory, or the reader would be killed for memory instead of failing.
    private func checkClaims(_ entry: PackTensorEntry) throws {
        let memory = PhysicalMemory.bytes
        guard entry.rawBytes <= memory else {
            throw InputError(file: path, problem: "tensor \(entry.name) decodes to \(entry.rawBytes) bytes, more than this machine's \(memory) bytes of memory")
        }
        for (number, chunk) in entry.chunks.enumerated() {
            let planeLength = chunk.rawLength / chunk.planes.count
            var offset = chunk.offset
            for plane in chunk.planes {
                if plane.codec == .zstd {
                    let declared = Zstd.declaredContentSize(mapped.slice(offset: offset, count: plane.storedLength))
                    guard declared == planeLength else {
                        throw InputError(file: path, problem: "tensor \(entry.name) chunk \(number) does not decode: zstd frame declares \(declared.map(String.init) ?? "no") content size, expected \(planeLength)")
                    }
                }
                offset += plane.storedLength
            }
        }
    }

    /// Drops read tensors' stored pages from the process's resident set (the page cache keeps
    /// them), so reading every tensor of a large pack in turn costs a bounded amount of memory,
    /// not the pack. Spans are gathered and released together once they reach
    /// `releaseBatchBytes`: one madvise per tensor, each a TLB shootdown on every thread's core,
    /// was a tenth of a 0.5B stack's time.
    private func releasePages(_ entry: PackTensorEntry) {
        guard let first = entry.chunks.first, let last = entry.chunks.last else { return }
        let lower = first.offset, upper = last.offset + last.storedLength
        releaseLock.lock()
        let span = pendingRelease.map { (lower: min($0.lower, lower), upper: max($0.upper, upper), bytes: $0.bytes + upper - lower) }
            ?? (lower: lower, upper: upper, bytes: upper - lower)
        let due = span.bytes >= Self.releaseBatchBytes
        pendingRelease = due ? nil : span
        releaseLock.unlock()
        if due { mapped.release(offset: span.lower, count: span.upper - span.lower) }
    }

    static let releaseBatchBytes = 16 << 20
    private let releaseLock = NSLock()
    private var pendingRelease: (lower: Int, upper: Int, bytes: Int)?

    /// Calls `body` with the tensor's bytes: straight from the map when it is stored raw (after
    /// checking its checksums), otherwise from a decoded copy.
    public func withRawBytes<R>(_ name: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let entry = try requireEntry(name)
        if entry.isStoredRaw, let first = entry.chunks.first {
            for (number, chunk) in entry.chunks.enumerated() {
                try verifyStored(entry, chunk: chunk, number: number)
            }
            let view = mapped.slice(offset: first.offset, count: entry.rawBytes)
            for (number, chunk) in entry.chunks.enumerated() {
                let slice = UnsafeRawBufferPointer(rebasing: view[(chunk.offset - first.offset)..<(chunk.offset - first.offset + chunk.rawLength)])
                guard Self.chunkChecksumMatches(XXH3.hash64(slice), chunk.rawHash) else {
                    throw InputError(file: path, problem: "tensor \(name) chunk \(number): decoded checksum mismatch")
                }
            }
            defer { releasePages(entry) }
            return try body(view)
        }
        return try readTensor(name).bytes.withUnsafeBytes(body)
    }

    /// Checks every checksum and decodes every chunk of every tensor.
    public func verifyAll() throws {
        for entry in tensors {
            let largest = entry.chunks.map(\.rawLength).max() ?? 0
            var buffer = [UInt8](repeating: 0, count: largest)
            for (number, chunk) in entry.chunks.enumerated() {
                try buffer.withUnsafeMutableBytes { all in
                    try decodeChunk(entry, chunk: chunk, number: number, into: UnsafeMutableRawBufferPointer(rebasing: all[0..<chunk.rawLength]))
                }
            }
        }
    }

    private func decode(_ entry: PackTensorEntry, into output: UnsafeMutableRawBufferPointer) throws {
        var starts: [Int] = []
        var position = 0
        for chunk in entry.chunks {
            starts.append(position)
            position += chunk.rawLength
        }
        var failures = [Error?](repeating: nil, count: entry.chunks.count)
        failures.withUnsafeMutableBufferPointer { failureSlots in
            let work = { (number: Int) in
                let chunk = entry.chunks[number]
                let target = UnsafeMutableRawBufferPointer(rebasing: output[starts[number]..<(starts[number] + chunk.rawLength)])
                do {
                    try self.decodeChunk(entry, chunk: chunk, number: number, into: target)
                } catch {
                    failureSlots[number] = error
                }
            }
            if entry.chunks.count > 1 {
                DispatchQueue.concurrentPerform(iterations: entry.chunks.count, execute: work)
            } else {
                (0..<entry.chunks.count).forEach(work)
            }
        }
        if let failure = failures.compactMap({ $0 }).first { throw failure }
    }

    private func verifyStored(_ entry: PackTensorEntry, chunk: PackChunk, number: Int) throws {
        let stored = mapped.slice(offset: chunk.offset, count: chunk.storedLength)
        guard Self.chunkChecksumMatches(XXH3.hash64(stored), chunk.storedHash) else {
            throw InputError(file: path, problem: "tensor \(entry.name) chunk \(number): stored checksum mismatch (the file is damaged)")
        }
    }

    private func decodeChunk(_ entry: PackTensorEntry, chunk: PackChunk, number: Int, into output: UnsafeMutableRawBufferPointer) throws {
        try verifyStored(entry, chunk: chunk, number: number)
        let stored = mapped.slice(offset: chunk.offset, count: chunk.storedLength)
        do {
            try ChunkCodec.decode(stored: stored, chunk: chunk, dtype: entry.dtype, raw: output)
        } catch {
            throw InputError(file: path, problem: "tensor \(entry.name) chunk \(number) does not decode: \(error)")
        }
        guard Self.chunkChecksumMatches(XXH3.hash64(UnsafeRawBufferPointer(output)), chunk.rawHash) else {
            throw InputError(file: path, problem: "tensor \(entry.name) chunk \(number): decoded checksum mismatch")
        }
    }
}

extension PackReader {
    /// The document decoded as the adapter model of spec §9 (unknown members are ignored).
    public func adapterDocument() throws -> PackDocument {
        do {
            return try document.decoded(as: PackDocument.self)
        } catch let error as DecodingError {
            throw InputError(file: path, problem: "adapter document does not match the format: \(Self.describe(error))")
        } catch {
            throw InputError(file: path, problem: "adapter document does not match the format: \(error)")
        }
    }

    /// One line naming the member, e.g. "adapters[0].modules[3] lacks scale".
    static func describe(_ error: DecodingError) -> String {
        func place(_ path: [CodingKey]) -> String {
            let text = path.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return text.hasPrefix(".") ? String(text.dropFirst()) : (text.isEmpty ? "the document" : text)
        }
        switch error {
        case .keyNotFound(let key, let context): return "\(place(context.codingPath)) lacks \(key.stringValue)"
        case .valueNotFound(_, let context), .typeMismatch(_, let context), .dataCorrupted(let context):
            return "\(place(context.codingPath)): \(context.debugDescription)"
        @unknown default: return "\(error)"
        }
    }
}
