import Testing
@testable import PeftPack

/// bitsandbytes quantization (fixtures/data/bnb_quantize, made by bitsandbytes 0.50.2 on CPU):
/// every byte the quantizers write equals bnb's — packed codes, absmax, nested absmax and offset,
/// int8 codes and SCB — for every block size, both 4-bit types, with and without double
/// quantization, ties on every decision bound, all-zero blocks and rows, partial last blocks.
@Suite struct BitsandbytesQuantizerTests {
    static let folder = Fixtures.path("bnb_quantize")

    static func vectors(_ file: String) throws -> (checkpoint: Checkpoint, cases: [String]) {
        let checkpoint = try Checkpoint(storedAt: folder + "/" + file)
        let cases = checkpoint.names.filter { $0.hasSuffix(".input") }.map { String($0.dropLast(".input".count)) }.sorted()
        return (checkpoint, cases)
    }

    /// `<type>.bs<blocksize>.<plain|nested>.<dtype>[.<variant>]`
    static func parameters(_ name: String) -> (type: BitsandbytesFormat.FourBitType, blocksize: Int, nested: Bool) {
        let parts = name.split(separator: ".")
        return (BitsandbytesFormat.FourBitType(rawValue: String(parts[0]))!, Int(parts[1].dropFirst(2))!, parts[2] == "nested")
    }

    static func bytes(_ floats: [Float]) -> [UInt8] {
        floats.withUnsafeBytes { Array($0) }
    }

    @Test func everyFourBitVectorQuantizesBitExactly() throws {
        let (checkpoint, cases) = try Self.vectors("vectors_quantize_4bit.safetensors")
        #expect(cases.count == 37)
        for name in cases {
            let (type, blocksize, nested) = Self.parameters(name)
            let nestedCode = nested ? try checkpoint.tensor(name + ".nested_code").floats() : nil
            let result = FourBitQuantizer.quantize(try checkpoint.tensor(name + ".input").floats(), blocksize: blocksize,
                                                   type: type, nestedCode: nestedCode)
            #expect(result.packed == (try checkpoint.tensor(name + ".packed").bytes), "\(name): packed codes")
            switch result.absmax {
            case .plain(let absmax):
                #expect(!nested)
                #expect(Self.bytes(absmax) == (try checkpoint.tensor(name + ".absmax").bytes), "\(name): absmax")
            case .nested(let codes, let nestedAbsmax, let offset):
                #expect(nested)
                #expect(Self.bytes([offset]) == (try checkpoint.tensor(name + ".offset").bytes), "\(name): offset")
                #expect(codes == (try checkpoint.tensor(name + ".absmax").bytes), "\(name): nested codes")
                #expect(Self.bytes(nestedAbsmax) == (try checkpoint.tensor(name + ".nested_absmax").bytes), "\(name): nested absmax")
            }
        }
    }

    /// bnb's 8-bit kernel is not a nearest-code search: plain rounding to the nearest code picks
    /// another code for some of these values, so the grid lookup is what makes the bytes equal.
    @Test func nestedQuantizationIsTheGridLookupNotTheNearestCode() throws {
        let (checkpoint, _) = try Self.vectors("vectors_quantize_4bit.safetensors")
        let name = "nf4.bs32.nested.bf16.manyblocks"
        let code = try checkpoint.tensor(name + ".nested_code").floats()
        let plain = FourBitQuantizer.quantize(try checkpoint.tensor(name + ".input").floats(), blocksize: 32, type: .nf4, nestedCode: nil)
        guard case .plain(let absmax) = plain.absmax else { Issue.record("plain absmax"); return }
        let offset = TorchCPUSum.mean(absmax)
        let centred = absmax.map { $0 - offset }
        let grid = DynamicBlockwiseQuantizer.quantize(centred, code: code, blocksize: 256)
        #expect(grid.codes == (try checkpoint.tensor(name + ".absmax").bytes))
        let nearest = centred.enumerated().map { index, value -> UInt8 in
            let scaled = value / grid.absmax[index / 256]
            return UInt8(code.indices.min { abs(code[$0] - scaled) < abs(code[$1] - scaled) }!)
        }
        #expect(nearest != grid.codes)
    }

    @Test func offsetIsTheAbsmaxMeanInTorchsSumOrder() throws {
        let (checkpoint, _) = try Self.vectors("vectors_quantize_4bit.safetensors")
        let name = "nf4.bs32.nested.bf16.manyblocks"
        let plain = FourBitQuantizer.quantize(try checkpoint.tensor(name + ".input").floats(), blocksize: 32, type: .nf4, nestedCode: nil)
        guard case .plain(let absmax) = plain.absmax else { Issue.record("plain absmax"); return }
        let expected = try checkpoint.tensor(name + ".offset").floats()[0]
        #expect(TorchCPUSum.mean(absmax) == expected)
    }

    /// Long vectors (fixtures/data/torch_sums: torch's own sums with 1-4 threads): from 32,768
    /// elements torch sums equal chunks, one per thread, and adds them in order. Exact equality:
    /// the same fp32 additions in the same order. Control: the one-thread order differs from the
    /// two-thread sum on some vector, so the chunking is what makes them equal.
    @Test func longSumsSplitAcrossThreadsAsTorchSplitsThem() throws {
        let file = try SafetensorsFile(path: Fixtures.path("torch_sums/sums.safetensors"))
        var singleThreadMisses = 0
        for name in file.names where name.hasPrefix("codes_") {
            let codes = try file.tensor(name).bytes.withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
            let vector = codes.map { Float($0) * 0x1p-16 }
            let expected = try file.tensor("sum_" + name.dropFirst("codes_".count)).floats()
            for threads in 1...4 {
                #expect(TorchCPUSum.sum(vector, threads: threads) == expected[threads - 1], "\(name), \(threads) threads")
            }
            if TorchCPUSum.sum(vector, threads: 1) != expected[1] { singleThreadMisses += 1 }
        }
        #expect(singleThreadMisses > 0)
    }

    @Test func everyInt8VectorQuantizesBitExactly() throws {
        let (checkpoint, cases) = try Self.vectors("vectors_quantize_int8.safetensors")
        #expect(cases.count == 4)
        for name in cases {
            let input: HostTensor = try checkpoint.tensor(name + ".input")
            let result = Int8Quantizer.quantize(input.floats(), columns: input.shape[1])
            #expect(result.codes.map { UInt8(bitPattern: $0) } == (try checkpoint.tensor(name + ".CB").bytes), "\(name): CB")
            #expect(Self.bytes(result.scales) == (try checkpoint.tensor(name + ".SCB").bytes), "\(name): SCB")
        }
    }
}
