import Foundation
import Testing
@testable import PeftPack

/// A damaged pack is always detected: every truncation and every single-byte flip of a small pack
/// either fails to open or fails when its tensors are decoded; none is accepted, none crashes.
@Suite struct ContainerCorruptionTests {
    static func smallPack() throws -> [UInt8] {
        let path = try ContainerTests.writePack([
            ("w", ContainerTests.gaussianBF16(count: 200, seed: 1)),
            ("ids", ContainerTests.randomTensor(.i64, shape: [8], seed: 2)),
        ], options: .init(chunkSize: 256))
        return try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
    }

    static func outcome(_ bytes: [UInt8], folder: String) -> String? {
        let path = folder + "/damaged.peftpack"
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        do {
            let reader = try PackReader(path: path)
            try reader.verifyAll()
            return nil
        } catch let error as InputError {
            return error.description
        } catch {
            return "unexpected \(error)"
        }
    }

    @Test func everyTruncationIsDetected() throws {
        let pack = try Self.smallPack()
        #expect(pack.count < 4096)
        let folder = Fixtures.temporaryDirectory()
        for length in 0..<pack.count {
            let message = Self.outcome(Array(pack[..<length]), folder: folder)
            #expect(message != nil && !message!.hasPrefix("unexpected"), "length \(length): \(message ?? "accepted")")
        }
    }

    @Test func everySingleByteFlipIsDetected() throws {
        let pack = try Self.smallPack()
        let folder = Fixtures.temporaryDirectory()
        for position in 0..<pack.count {
            var damaged = pack
            damaged[position] ^= 0x5A
            let message = Self.outcome(damaged, folder: folder)
            // Padding and reserved bytes are covered by no checksum; a flip there changes nothing
            // that is read, so the tensors must still read back exactly.
            if message == nil {
                let reader = try PackReader(path: folder + "/damaged.peftpack")
                let original = try PackReader(path: ContainerTests.writePack([("w", ContainerTests.gaussianBF16(count: 200, seed: 1))]))
                #expect(try reader.readTensor("w").bytes == original.readTensor("w").bytes, "flip at \(position) changed data silently")
            } else {
                #expect(!message!.hasPrefix("unexpected"), "flip at \(position): \(message!)")
            }
        }
    }

    @Test func wrongMagicIsRefused() throws {
        var pack = try Self.smallPack()
        pack[1] = UInt8(ascii: "X")
        #expect(Self.outcome(pack, folder: Fixtures.temporaryDirectory())?.contains("wrong magic") == true)
    }

    static func withPreamble(_ pack: [UInt8], _ edit: (inout [UInt8]) -> Void) -> [UInt8] {
        var copy = pack
        edit(&copy)
        let hash = copy.withUnsafeBytes { XXH3.hash64(UnsafeRawBufferPointer(rebasing: $0[0..<56])) }
        withUnsafeBytes(of: hash.littleEndian) { copy.replaceSubrange(56..<64, with: $0) }
        return copy
    }

    @Test func futureMajorVersionIsRefusedWithAnUpgradeMessage() throws {
        let pack = Self.withPreamble(try Self.smallPack()) { $0[8] = 2; $0[10] = 0 }
        let message = Self.outcome(pack, folder: Fixtures.temporaryDirectory())
        #expect(message?.contains("pack format 2.0 is newer than this peftpack (reads 1.x); upgrade peftpack") == true)
    }

    @Test func newerMinorVersionIsRead() throws {
        let pack = Self.withPreamble(try Self.smallPack()) { $0[10] = 7 }
        #expect(Self.outcome(pack, folder: Fixtures.temporaryDirectory()) == nil)
    }

    @Test func hugeHeaderClaimIsRefusedBeforeAllocating() throws {
        let pack = Self.withPreamble(try Self.smallPack()) { bytes in
            withUnsafeBytes(of: UInt64(1) << 40) { bytes.replaceSubrange(32..<40, with: $0) }
        }
        #expect(Self.outcome(pack, folder: Fixtures.temporaryDirectory())?.contains("limits") == true)
    }

    /// Within the 256 MiB limit but beyond what the small frame could decode to: refused from the
    /// preamble alone, before the reader allocates the claimed size.
    @Test func headerClaimBeyondAnyCompressionRatioIsRefused() throws {
        let pack = try Self.smallPack()
        let stored = pack.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 24, as: UInt64.self) }
        let claim = UInt64(PackFormat.maximumRawHeader)
        #expect(stored * UInt64(PackFormat.maximumExpansion) < claim)
        let edited = Self.withPreamble(pack) { bytes in
            withUnsafeBytes(of: claim.littleEndian) { bytes.replaceSubrange(32..<40, with: $0) }
        }
        #expect(Self.outcome(edited, folder: Fixtures.temporaryDirectory())?.contains("beyond any zstd ratio") == true)
    }

    /// The pack with its header JSON edited as text and every checksum and length made right
    /// again, so only the edited claim is wrong.
    static func withHeader(_ pack: [UInt8], _ edit: (String) -> String) throws -> [UInt8] {
        let (offset, rawLength) = pack.withUnsafeBytes {
            (Int($0.loadUnaligned(fromByteOffset: 16, as: UInt64.self)), Int($0.loadUnaligned(fromByteOffset: 32, as: UInt64.self)))
        }
        var raw = [UInt8](repeating: 0, count: rawLength)
        try pack.withUnsafeBytes { bytes in
            try raw.withUnsafeMutableBytes { try Zstd.decompress(UnsafeRawBufferPointer(rebasing: bytes[offset...]), into: $0) }
        }
        let edited = Array(edit(String(decoding: raw, as: UTF8.self)).utf8)
        let stored = try edited.withUnsafeBytes { try Zstd.compress($0, level: 3) }
        var copy = Array(pack[0..<offset]) + stored
        for (field, value) in [(24, UInt64(stored.count)), (32, UInt64(edited.count)), (40, XXH3.hash64(stored))] {
            withUnsafeBytes(of: value.littleEndian) { copy.replaceSubrange(field..<(field + 8), with: $0) }
        }
        return withPreamble(copy) { _ in }
    }

    /// A chunk claiming 64 MiB from a few stored bytes is refused while the index is read, before
    /// the tensor's buffer is allocated: the decompression-bomb rule of spec §7.
    @Test func chunkClaimBeyondAnyCompressionRatioIsRefused() throws {
        let pack = try Self.smallPack()
        var replaced = false
        let bomb = try Self.withHeader(pack) { text in
            // The i64 tensor: one chunk of 64 bytes, claimed as 64 MiB with a matching shape.
            guard let range = text.range(of: #""raw_length":64,"#) else { return text }
            replaced = true
            return text.replacingCharacters(in: range, with: #""raw_length":67108864,"#)
                .replacingOccurrences(of: #""shape":[8]"#, with: #""shape":[8388608]"#)
        }
        #expect(replaced)
        #expect(Self.outcome(bomb, folder: Fixtures.temporaryDirectory())?.contains("beyond any zstd ratio") == true)
        // The same edit back to the true size reads: only the claim was wrong.
        let honest = try Self.withHeader(pack) { $0 }
        #expect(Self.outcome(honest, folder: Fixtures.temporaryDirectory()) == nil)
    }

    /// A tensor whose chunks stay within the ratio limit but add up to more than the machine's
    /// memory (all-zero data really compresses that far) is refused by readTensor before its
    /// buffer is allocated, with a message, rather than getting the process killed.
    @Test func tensorLargerThanMemoryIsRefusedBeforeAllocating() throws {
        let chunkClaim = PackFormat.maximumChunkSize
        let chunks = PhysicalMemory.bytes / chunkClaim + 1
        let stored = chunkClaim / PackFormat.maximumExpansion
        let tensor = ContainerTests.randomTensor(.u8, shape: [chunks * stored], seed: 3)
        let path = try ContainerTests.writePack([("big", tensor)], options: .init(chunkSize: stored))
        let pack = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let claimed = try Self.withHeader(pack) { text in
            text.replacingOccurrences(of: "\"raw_length\":\(stored),", with: "\"raw_length\":\(chunkClaim),")
                .replacingOccurrences(of: "\"shape\":[\(chunks * stored)]", with: "\"shape\":[\(chunks * chunkClaim)]")
        }
        let file = Fixtures.temporaryDirectory() + "/claimed.peftpack"
        FileManager.default.createFile(atPath: file, contents: Data(claimed))
        let reader = try PackReader(path: file)
        #expect(reader.tensors.first?.rawBytes == chunks * chunkClaim)
        #expect(throws: InputError.self) { try reader.readTensor("big") }
        do {
            _ = try reader.readTensor("big")
        } catch {
            #expect("\(error)".contains("more than this machine's"), "\(error)")
        }
    }
}
