import Foundation
import Testing
@testable import PeftPack

/// `extract` on the fixtures' full fine-tune (llama-tiny-ft), against the singular values of every
/// ΔW that torch computed in float64 (extract_llama/spectra.safetensors) and the
/// fine-tune's own logits (extract_llama/reference.safetensors).
@Suite struct ExtractTests {
    static let base = Fixtures.path("models/llama-tiny")
    static let finetuned = Fixtures.path("models/llama-tiny-ft")

    static func extract(_ options: Extract.Options) throws -> (pack: String, report: Extract.Report) {
        let pack = Fixtures.temporaryDirectory() + "/extracted.peftpack"
        return (pack, try Extract.run(base: base, finetuned: finetuned, output: pack, options: options))
    }

    static func spectrum(_ tensor: String) throws -> [Double] {
        let file = try SafetensorsFile(path: Fixtures.path("extract_llama/spectra.safetensors"))
        return try file.tensor(tensor).bytes.withUnsafeBytes { Array($0.bindMemory(to: Double.self)) }
    }

    /// ΔW in fp64 from the two checkpoints, stored orientation.
    static func delta(_ tensor: String) throws -> [Double] {
        let before = try Checkpoint(path: base).tensor(tensor).floats(), after = try Checkpoint(path: finetuned).tensor(tensor).floats()
        return zip(after, before).map { Double($0) - Double($1) }
    }

    /// ‖ΔW − B·A‖_F in fp64 for one extracted linear module.
    static func residual(pack: String, module: AdapterModule, shape: [Int]) throws -> Double {
        let reader = try PackReader(path: pack)
        let a = try reader.readTensor(module.tensors[TensorRole.loraA]!).floats()
        let b = try reader.readTensor(module.tensors[TensorRole.loraB]!).floats()
        let rank = module.rank!, rows = shape[0], cols = shape[1]
        let target = try delta(module.target + ".weight")
        var squares = 0.0
        for row in 0..<rows {
            for col in 0..<cols {
                var product = 0.0
                for k in 0..<rank { product += Double(b[row * rank + k]) * Double(a[k * cols + col]) }
                let difference = target[row * cols + col] - (module.scale ?? 1) * product
                squares += difference * difference
            }
        }
        return squares.squareRoot()
    }

    /// Eckart–Young: the best rank-r error is √(Σ_{i>r} sᵢ²). The randomized SVD (8 oversampling
    /// columns, 2 power iterations) must come within 1% of it on every matrix.
    @Test(arguments: [2, 8, 12])
    func rankErrorWithinOnePercentOfOptimal(rank: Int) throws {
        let (pack, report) = try Self.extract(.init(rule: .fixed(rank)))
        let document = try PackReader(path: pack).adapterDocument()
        let modules = document.adapters[0].modules.filter { $0.mode == nil }
        #expect(modules.count == 14)
        #expect(report.modules.contains { $0.method == "randomized" })
        for module in modules {
            let shape = try Checkpoint(path: Self.base).info(module.target + ".weight")!.shape
            let spectrum = try Self.spectrum(module.target + ".weight")
            let optimal = spectrum.dropFirst(rank).reduce(0) { $0 + $1 * $1 }.squareRoot()
            let actual = try Self.residual(pack: pack, module: module, shape: shape)
            #expect(module.rank == rank)
            #expect(actual <= optimal * 1.01, "\(module.target): ‖ΔW − BA‖ = \(actual), optimal \(optimal)")
            #expect(actual >= optimal * (1 - 1e-5), "\(module.target): below the Eckart–Young bound?")
        }
    }

    /// --energy picks, per module, the smallest rank whose leading singular values keep the share.
    @Test(arguments: [0.5, 0.9, 0.99])
    func energyPicksTheSmallestSufficientRank(share: Double) throws {
        let (pack, report) = try Self.extract(.init(rule: .energy(share)))
        let modules = try PackReader(path: pack).adapterDocument().adapters[0].modules.filter { $0.mode == nil }
        for module in modules {
            let squares = try Self.spectrum(module.target + ".weight").map { $0 * $0 }
            let total = squares.reduce(0, +)
            var kept = 0.0, expected = 0
            for (index, square) in squares.enumerated() {
                kept += square
                if kept >= share * total { expected = index + 1; break }
            }
            #expect(module.rank == expected, "\(module.target): rank \(module.rank ?? -1), expected \(expected)")
            let entry = report.modules.first { $0.tensor == module.target + ".weight" }!
            #expect(entry.energyKept >= share - 1e-6)
        }
    }

    /// A delta of true rank 5 is reproduced to fp32 precision by any rank ≥ 5.
    @Test func syntheticLowRankDeltaIsExact() throws {
        var random = SplitMix64(seed: 42)
        let rows = 96, cols = 80, trueRank = 5
        let w = (0..<(rows * cols)).map { _ in random.nextGaussian() }
        let b = (0..<(rows * trueRank)).map { _ in random.nextGaussian() * 0.1 }
        let a = (0..<(trueRank * cols)).map { _ in random.nextGaussian() * 0.1 }
        var tuned = w
        for row in 0..<rows {
            for col in 0..<cols {
                var sum: Float = 0
                for k in 0..<trueRank { sum += b[row * trueRank + k] * a[k * cols + col] }
                tuned[row * cols + col] += sum
            }
        }
        let folder = Fixtures.temporaryDirectory()
        for (name, values) in [("base", w), ("tuned", tuned)] {
            try FileManager.default.createDirectory(atPath: "\(folder)/\(name)", withIntermediateDirectories: true)
            try SafetensorsWriter.write(["layer.proj.weight": HostTensor(floats: values, shape: [rows, cols], dtype: .f32),
                                         "layer.norm.weight": HostTensor(floats: [Float](repeating: 1, count: cols), shape: [cols], dtype: .f32)],
                                        to: "\(folder)/\(name)/model.safetensors")
        }
        for rank in [5, 8, 40] {
            let pack = "\(folder)/rank\(rank).peftpack"
            let report = try Extract.run(base: "\(folder)/base", finetuned: "\(folder)/tuned", output: pack, options: .init(rule: .fixed(rank)))
            #expect(report.unchanged == 1)
            let reader = try PackReader(path: pack)
            let module = try reader.adapterDocument().adapters[0].modules[0]
            let fa = try reader.readTensor(module.tensors[TensorRole.loraA]!).floats(), fb = try reader.readTensor(module.tensors[TensorRole.loraB]!).floats()
            var squares = 0.0, norm = 0.0
            for row in 0..<rows {
                for col in 0..<cols {
                    var product = 0.0
                    for k in 0..<rank { product += Double(fb[row * rank + k]) * Double(fa[k * cols + col]) }
                    let target = Double(tuned[row * cols + col]) - Double(w[row * cols + col])
                    squares += (target - product) * (target - product)
                    norm += target * target
                }
            }
            // fp32 rounding of W + BA alone leaves ~1e-7 of ΔW that no rank-5 factor holds.
            #expect((squares / norm).squareRoot() < 1e-5, "rank \(rank): relative error \((squares / norm).squareRoot())")
        }
    }

    /// Applied to the base, the extracted adapter's logits approach the fine-tune's (from
    /// transformers) as the rank grows, and at full rank match them to fp32 precision.
    @Test func outputsApproachTheFineTuneAsRankGrows() throws {
        var previous = Double.infinity
        for rank in [2, 8, 32, 64] {
            let (pack, _) = try Self.extract(.init(rule: .fixed(rank)))
            let report = try Verify.run(pack: pack, base: Self.base, adapterNames: [],
                                        targets: [.reference(path: Fixtures.path("extract_llama/reference.safetensors"), key: nil)],
                                        inputShape: (1, 1), seed: 0, tolerance: .init(absolute: 0, relative: 1e-5))
            let error = report.comparisons[0].meanAbsError
            #expect(error < previous, "rank \(rank): mean |Δlogit| \(error) did not drop below \(previous)")
            previous = error
            if rank == 64 { #expect(report.passed, "full rank: max rel \(report.comparisons[0].maxRelError)") }
        }
    }

    /// A global budget spends the same parameters as uniform rank 8 for less total squared error.
    @Test func budgetBeatsUniformRankAtTheSameSize() throws {
        let (_, uniform) = try Self.extract(.init(rule: .fixed(8)))
        let (_, budgeted) = try Self.extract(.init(rule: .budget(parameters: uniform.parameters)))
        #expect(budgeted.parameters <= uniform.parameters)
        func squaredError(_ report: Extract.Report) throws -> Double {
            try report.modules.reduce(0) { total, module in
                let energy = try Self.spectrum(module.tensor).reduce(0) { $0 + $1 * $1 }
                return total + energy * (1 - module.energyKept)
            }
        }
        #expect(try squaredError(budgeted) < squaredError(uniform))
        #expect(Set(budgeted.modules.map(\.rank)).count > 1, "the budget should give different modules different ranks")
    }

    /// Past the allowance for kept factors, a budget keeps only spectra and factors the modules a
    /// second time at their ranks: the same allocation (it comes from the same spectra), and every
    /// module's error within 2% of the one-pass result (a sketch of r + 8 columns instead of the
    /// truncation of the wide first-pass one; the fixture's deltas have flat, slowly decaying
    /// spectra, where a narrow sketch loses most).
    @Test func twoPassBudgetAllocatesTheSameRanks() throws {
        let (_, uniform) = try Self.extract(.init(rule: .fixed(8)))
        var options = Extract.Options(rule: .budget(parameters: uniform.parameters))
        let (_, onePass) = try Self.extract(options)
        options.budgetFactorAllowance = 0
        let (_, twoPass) = try Self.extract(options)
        #expect(twoPass.modules.map(\.rank) == onePass.modules.map(\.rank))
        #expect(twoPass.parameters == onePass.parameters)
        for (first, second) in zip(onePass.modules, twoPass.modules) {
            #expect(second.relativeError <= first.relativeError * 1.02 + 1e-6, "\(second.tensor): \(second.relativeError) vs \(first.relativeError)")
        }
    }

    @Test func embeddingsAndNormsAreStoredWholeByDefault() throws {
        let (pack, report) = try Self.extract(.init(rule: .fixed(4)))
        let whole = Set(report.fullTensors.map(\.tensor))
        #expect(whole.contains("model.embed_tokens.weight"))
        #expect(whole.contains("lm_head.weight"))
        #expect(whole.contains("model.norm.weight"))
        let reader = try PackReader(path: pack)
        let module = try reader.adapterDocument().adapters[0].modules.first { $0.target == "model.norm.weight" }!
        #expect(try reader.readTensor(module.tensors[TensorRole.fullValue]!).bytes == Checkpoint(path: Self.finetuned).tensor("model.norm.weight").bytes)
    }

    @Test func badInputIsRefused() throws {
        let pack = Fixtures.temporaryDirectory() + "/out.peftpack"
        #expect(throws: InputError.self) {
            try Extract.run(base: Self.base, finetuned: Fixtures.path("models/gpt2-tiny"), output: pack, options: .init())
        }
        #expect(throws: InputError.self) {
            try Extract.run(base: Self.base, finetuned: Self.base, output: pack, options: .init())
        }
        for rule in [Extract.RankRule.fixed(0), .energy(1.5), .energy(0), .maxError(1)] {
            #expect(throws: UsageError.self) {
                try Extract.run(base: Self.base, finetuned: Self.finetuned, output: pack, options: .init(rule: rule))
            }
        }
        #expect(!FileManager.default.fileExists(atPath: pack))
    }
}
