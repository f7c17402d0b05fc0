import Foundation
import Testing
@testable import PeftPack

/// `stack` on the fixtures' PEFT adapters (llama-tiny base), judged by the Swift runtime applying
/// the inputs unmerged (itself checked against PEFT's outputs in PipelineVerifyTests) and by dense
/// sums computed here in fp64.
@Suite struct StackTests {
    static let base = Fixtures.path("models/llama-tiny")

    static func stack(_ inputs: [(String, Double)], _ recompression: Stack.Recompression = .none) throws -> (pack: String, report: Stack.Report) {
        let output = Fixtures.temporaryDirectory() + "/stacked.peftpack"
        let report = try Stack.run(inputs: inputs.map { Stack.Input(pack: $0.0, adapter: nil, weight: $0.1) }, output: output,
                                   options: .init(recompression: recompression))
        return (output, report)
    }

    /// Dense ΔW (out×in, fp64) of every LoRA module of a pack: Σ scale·B·A per target.
    static func deltas(_ pack: String) throws -> [String: (rows: Int, cols: Int, values: [Double])] {
        let reader = try PackReader(path: pack)
        var out: [String: (rows: Int, cols: Int, values: [Double])] = [:]
        for adapter in try reader.adapterDocument().adapters {
            for module in adapter.modules where module.mode == nil {
                let aName = module.tensors[TensorRole.loraA]!, bName = module.tensors[TensorRole.loraB]!
                let aShape = reader.entry(named: aName)!.shape, bShape = reader.entry(named: bName)!.shape
                let a = try reader.readTensor(aName).floats(), b = try reader.readTensor(bName).floats()
                let (rank, rows, cols) = (aShape[0], bShape[0], aShape[1])
                var values = out[module.target]?.values ?? [Double](repeating: 0, count: rows * cols)
                for row in 0..<rows {
                    for col in 0..<cols {
                        var sum = 0.0
                        for k in 0..<rank { sum += Double(b[row * rank + k]) * Double(a[k * cols + col]) }
                        values[row * cols + col] += (module.scale ?? 1) * sum
                    }
                }
                out[module.target] = (rows, cols, values)
            }
        }
        return out
    }

    static func verify(_ pack: String, against other: String) throws -> Verify.Report {
        try Verify.run(pack: pack, base: base, adapterNames: [], targets: [.pack(path: other)], inputShape: (2, 12), seed: 3,
                       tolerance: .init(absolute: 0, relative: 1e-5))
    }

    /// An adapter stacked with itself at 0.5 and 0.5 is the adapter (rsLoRA with rank and alpha
    /// patterns, so every module has its own scale to fold).
    @Test func halfAndHalfOfItselfIsItself() throws {
        let original = try PipelineVerifyTests.pack("llama_rslora_patterns")
        let (stacked, report) = try Self.stack([(original, 0.5), (original, 0.5)])
        #expect(report.modules.allSatisfy { $0.inputs == 2 })
        let result = try Self.verify(stacked, against: original)
        #expect(result.passed, "max rel \(result.comparisons[0].maxRelError)")
    }

    /// Weights 1 and −1 cancel: every module's ΔW is zero to fp32 rounding of the factors.
    @Test func oneMinusOneCancels() throws {
        let original = try PipelineVerifyTests.pack("llama_lora")
        let (stacked, _) = try Self.stack([(original, 1), (original, -1)])
        let reference = try Self.deltas(original)
        for (target, delta) in try Self.deltas(stacked) {
            let scale = reference[target]!.values.map(abs).max()!
            let worst = delta.values.map(abs).max()!
            #expect(worst <= scale * 1e-6, "\(target): |ΔW| up to \(worst)")
        }
    }

    /// Three different LoRAs (ranks, scales, rsLoRA patterns, an embedding LoRA that targets
    /// modules the others do not) stacked by concatenation give the same outputs as all three
    /// applied together at run time.
    @Test func concatenationEqualsAllApplied() throws {
        let first = try PipelineVerifyTests.pack("llama_lora"), second = try PipelineVerifyTests.pack("llama_rslora_patterns")
        let third = try PipelineVerifyTests.pack("llama_lora_embedding")
        let all = Fixtures.temporaryDirectory() + "/all.peftpack"
        _ = try PackImport.run(sources: [.init(path: first, name: nil), .init(path: second, name: "second"), .init(path: third, name: "third")],
                               output: all, baseFolder: Self.base, level: 3)
        let (stacked, report) = try Self.stack([(first, 1), (second, 1), (third, 1)])
        #expect(report.modules.contains { $0.inputs == 3 } && report.modules.contains { $0.inputs == 1 })
        let both = all
        let result = try Self.verify(stacked, against: both)
        #expect(result.passed, "max rel \(result.comparisons[0].maxRelError)")
    }

    /// --rank R gives, per module, the optimal rank-R approximation of the exact weighted sum:
    /// its error equals the Eckart–Young bound computed from a dense SVD of the sum.
    @Test(arguments: [2, 5])
    func recompressionIsTheOptimalTruncation(rank: Int) throws {
        let first = try PipelineVerifyTests.pack("llama_lora"), second = try PipelineVerifyTests.pack("llama_rslora_patterns")
        let (exactPack, _) = try Self.stack([(first, 0.7), (second, -0.4)])
        let (compressed, report) = try Self.stack([(first, 0.7), (second, -0.4)], .rank(rank))
        let exact = try Self.deltas(exactPack), approximate = try Self.deltas(compressed)
        for (target, sum) in exact {
            let dense = Matrix(rows: sum.rows, cols: sum.cols, values: sum.values.map { Float($0) })
            let singular = try LAPACK.svd(dense).s.map(Double.init)
            let optimal = singular.dropFirst(rank).reduce(0) { $0 + $1 * $1 }.squareRoot()
            let norm = singular.reduce(0) { $0 + $1 * $1 }.squareRoot()
            let residual = zip(sum.values, approximate[target]!.values).reduce(0.0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot()
            // fp32 factors and an fp32 dense SVD: agreement to ~1e-5 of ‖ΔW‖.
            #expect(abs(residual - optimal) <= 1e-5 * norm + 1e-12, "\(target): residual \(residual), optimal \(optimal)")
            let module = report.modules.first { $0.target == target }!
            #expect(module.rank <= rank)
            #expect(abs(module.relativeError - optimal / norm) <= 1e-4, "\(target): reported \(module.relativeError), optimal \(optimal / norm)")
        }
    }

    /// IA3 vectors multiply: stacking an IA3 adapter with itself at 1 and −1 gives all-ones vectors.
    @Test func ia3ComposesMultiplicatively() throws {
        let original = try PipelineVerifyTests.pack("llama_ia3")
        let (stacked, _) = try Self.stack([(original, 1), (original, -1)])
        let reader = try PackReader(path: stacked)
        for module in try reader.adapterDocument().adapters[0].modules where module.mode == nil {
            let vector = try reader.readTensor(module.tensors[TensorRole.ia3Vector]!).floats()
            #expect(vector.allSatisfy { abs($0 - 1) <= 1e-6 }, "\(module.target)")
        }
        let (doubled, _) = try Self.stack([(original, 0.5), (original, 0.5)])
        #expect(try Self.verify(doubled, against: original).passed)
    }

    @Test func badInputIsRefused() throws {
        let lora = try PipelineVerifyTests.pack("llama_lora")
        #expect(throws: BaseMismatchError.self) { try Self.stack([(lora, 1), (try PipelineVerifyTests.pack("gpt2_lora_fan_in_fan_out"), 1)]) }
        #expect(throws: InputError.self) { try Self.stack([(lora, 1), (try PipelineVerifyTests.pack("llama_dora"), 1)]) }
        #expect(throws: UsageError.self) { try Self.stack([(lora, 1), (try PipelineVerifyTests.pack("llama_ia3"), 1)]) }
        #expect(throws: UsageError.self) { try Self.stack([(lora, 1)], .rank(0)) }
        #expect(throws: InputError.self) {
            try Stack.run(inputs: [.init(pack: lora, adapter: nil, weight: 1)], output: lora, options: .init())
        }
    }

    /// Prefix and prompt adapters concatenate their virtual tokens: stacking equals applying the
    /// inputs together at run time (attention over the union of the prefixes).
    @Test(arguments: ["llama_prefix", "gpt2_prefix", "llama_prompt_tuning"])
    func virtualTokensConcatenate(caseName: String) throws {
        let original = try PipelineVerifyTests.pack(caseName)
        let both = Fixtures.temporaryDirectory() + "/both.peftpack"
        _ = try PackImport.run(sources: [.init(path: original, name: nil), .init(path: original, name: "again")], output: both,
                               baseFolder: try PipelineVerifyTests.baseFolder(of: caseName), level: 3)
        let (stacked, _) = try Self.stack([(original, 1), (original, 1)])
        let document = try PackReader(path: stacked).adapterDocument()
        let tokens = try PackReader(path: original).adapterDocument().adapters[0].settings.numVirtualTokens!
        #expect(document.adapters[0].settings.numVirtualTokens == 2 * tokens)
        let result = try Verify.run(pack: stacked, base: try PipelineVerifyTests.baseFolder(of: caseName), adapterNames: [],
                                    targets: [.pack(path: both)], inputShape: (2, 12), seed: 3, tolerance: .init(absolute: 0, relative: 1e-5))
        #expect(result.passed, "max rel \(result.comparisons[0].maxRelError)")
        #expect(throws: InputError.self) { try Self.stack([(original, 0.5), (original, 0.5)]) }
    }

    /// Bottleneck adapters stack as AdapterHub's Stack (one after another at every site): the
    /// stacked pack runs like the two inputs imported into one pack, and differs from either alone.
    @Test(arguments: ["bert_houlsby", "llama_pfeiffer"])
    func bottlenecksStackInOrder(caseName: String) throws {
        let original = try PipelineVerifyTests.pack(caseName)
        let base = try PipelineVerifyTests.baseFolder(of: caseName)
        let both = Fixtures.temporaryDirectory() + "/both.peftpack"
        _ = try PackImport.run(sources: [.init(path: original, name: nil), .init(path: original, name: "again")], output: both,
                               baseFolder: base, level: 3)
        let (stacked, report) = try Self.stack([(original, 1), (original, 1)])
        #expect(report.adapter == "Stack(stacked.0, stacked.1)")
        let document = try PackReader(path: stacked).adapterDocument()
        #expect(document.adapters.map(\.name) == ["stacked.0", "stacked.1"])
        #expect(document.userMetadata["composition"] == "Stack(stacked.0, stacked.1)")
        let same = try Verify.run(pack: stacked, base: base, adapterNames: [], targets: [.pack(path: both)], inputShape: (2, 12), seed: 3,
                                  tolerance: .init(absolute: 0, relative: 1e-5))
        #expect(same.passed)
        let single = try Verify.run(pack: stacked, base: base, adapterNames: [], targets: [.pack(path: original)], inputShape: (2, 12), seed: 3,
                                    tolerance: .init(absolute: 0, relative: 1e-5))
        #expect(!single.passed, "stacking twice should differ from applying once")
    }
}
