import Foundation
import Testing
@testable import PeftPack

/// Every single-byte flip and every truncation of a small safetensors file and a small torch.save
/// `.bin` (formats without checksums): each variant is either refused with an error or read as
/// some other data, and never crashes the process (this suite runs in the test process, so a crash
/// fails the whole run). Packs, which carry checksums, are in ContainerCorruptionTests.
@Suite struct FormatCorruptionTests {
    static func variants(of original: [UInt8]) -> [[UInt8]] {
        var out: [[UInt8]] = []
        for index in original.indices {
            var flipped = original
            flipped[index] ^= 0xFF
            out.append(flipped)
        }
        for length in 0..<original.count { out.append(Array(original.prefix(length))) }
        return out
    }

    static func run(_ fixture: String, into folder: String = Fixtures.temporaryDirectory(),
                    read: (String) throws -> Int) throws -> (refused: Int, read: Int) {
        let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Fixtures.path(fixture))))
        let path = folder + "/" + (fixture as NSString).lastPathComponent
        var refused = 0, accepted = 0
        for variant in variants(of: original) {
            try Data(variant).write(to: URL(fileURLWithPath: path))
            do {
                _ = try read(path)
                accepted += 1
            } catch let error as CustomStringConvertible {
                #expect(!error.description.isEmpty && !error.description.contains("\n"), "not a one-line error: \(error)")
                refused += 1
            }
        }
        return (refused, accepted)
    }

    @Test func safetensorsFlipsAndTruncations() throws {
        let (refused, read) = try Self.run("cases/llama_prompt_tuning/adapter/adapter_model.safetensors") { path in
            let file = try SafetensorsFile(path: path)
            return try file.names.reduce(0) { $0 + (try file.tensor($1).floats().count) }
        }
        // Every truncation loses declared bytes, and so does a flip in the length prefix's
        // significant bytes: most variants must be refused, data flips read as other data.
        #expect(refused >= 1144, "refused \(refused), read \(read)")
        #expect(read > 0)
    }

    @Test func torchBinFlipsAndTruncations() throws {
        let (refused, read) = try Self.run("malicious/valid_tiny.bin") { path in
            try TorchCheckpointReader.read(path: path).reduce(0) { $0 + $1.tensor.elementCount }
        }
        #expect(refused >= 1598, "refused \(refused), read \(read)")
        #expect(refused + read == 2 * 1598)
    }

    /// The real AdapterHub file (a Pfeiffer adapter's pytorch_adapter.bin, 20,989 bytes: about
    /// 4.5 KB of zip and pickle structure around 16 KB of tensor data). Its 41,978 variants are
    /// read from memory on every core, or the suite would spend a minute writing files.
    @Test func adapterHubBinFlipsAndTruncations() throws {
        let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Fixtures.path("cases/bert_pfeiffer/adapter_bin/pytorch_adapter.bin"))))
        let count = 2 * original.count
        let outcomes = Outcomes(count: count)
        DispatchQueue.concurrentPerform(iterations: count) { index in
            var variant = original
            if index < original.count { variant[index] ^= 0xFF } else { variant.removeLast(variant.count - (index - original.count)) }
            do {
                _ = try variant.withUnsafeBytes { try TorchCheckpointReader.read(bytes: $0, file: "pytorch_adapter.bin") }
            } catch {
                outcomes.record(index, String(describing: error))
            }
        }
        let refused = outcomes.messages.compactMap { $0 }
        #expect(refused.allSatisfy { !$0.isEmpty && !$0.contains("\n") })
        // Every truncation loses the zip's central directory; flips land mostly in tensor data,
        // which reads as other numbers.
        #expect(refused.count >= original.count, "refused \(refused.count) of \(count)")
        #expect(refused.count < count)
    }
}

/// Error messages by variant, written from many threads (each slot by one).
final class Outcomes: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var messages: [String?]

    init(count: Int) { messages = [String?](repeating: nil, count: count) }

    func record(_ index: Int, _ message: String) {
        lock.lock()
        messages[index] = message
        lock.unlock()
    }
}
