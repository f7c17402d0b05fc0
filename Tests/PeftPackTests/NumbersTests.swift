import CDTypeKernels
import Foundation
import Testing
@testable import PeftPack

/// Non-finite numbers and the merged-dtype tolerance of verify (issue 16, "Numbers"), against
/// fixtures/data/numbers from the real stack (fixturegen/numbers.py): adapters PEFT loads and
/// turns into NaN logits, PEFT's own bf16 merge, and a merge PEFT made at adapter weight 0.8.
@Suite struct NumbersTests {
    static let bf16Base = Fixtures.path("models/llama-tiny-bf16")

    struct NonFiniteSummary: Decodable {
        struct Counts: Decodable {
            var nan: Int
            var inf: Int
            var elements: Int
        }
        var tensors: [String: Counts]
        var peft_logits_nonfinite: Int
    }

    /// What torch counted in each poisoned adapter, and that PEFT's logits with it are non-finite.
    static let summary: [String: NonFiniteSummary] = {
        let data = try! Data(contentsOf: Fixtures.data.appendingPathComponent("numbers/nonfinite.json"))
        return try! JSONDecoder().decode([String: NonFiniteSummary].self, from: data)
    }()

    static func pack(_ folder: String, allowNonFinite: Bool = false) throws -> String {
        let output = Fixtures.temporaryDirectory() + "/adapter.peftpack"
        let result = try CLI.run(["import", Fixtures.path(folder), "-o", output] + (allowNonFinite ? ["--allow-nonfinite"] : []))
        #expect(result.status == 0, "\(result.stderr)")
        return output
    }

    static func expectRefusal(_ result: CLI.Result, _ fragment: String, leaving output: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(result.status == 2, "exit \(result.status): \(result.stderr)", sourceLocation: sourceLocation)
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)", sourceLocation: sourceLocation)
        #expect(result.stderr.contains(fragment), "expected “\(fragment)” in: \(result.stderr)", sourceLocation: sourceLocation)
        #expect(!FileManager.default.fileExists(atPath: output), "left \(output) behind", sourceLocation: sourceLocation)
    }

    // MARK: import

    @Test func importRefusesNaNTensorNamingItAndHowMany() throws {
        let expected = try #require(Self.summary["nan_lora"]?.tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"])
        #expect(Self.summary["nan_lora"]!.peft_logits_nonfinite > 0)
        let output = Fixtures.temporaryDirectory() + "/out.peftpack"
        let result = try CLI.run(["import", Fixtures.path("numbers/nan_lora"), "-o", output])
        Self.expectRefusal(result, "model.layers.0.self_attn.q_proj/A holds \(expected.nan) NaN of its \(expected.elements) elements", leaving: output)
        #expect(result.stderr.contains("--allow-nonfinite"))
    }

    @Test func importRefusesInfTensor() throws {
        let expected = try #require(Self.summary["inf_lora"]?.tensors["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"])
        let output = Fixtures.temporaryDirectory() + "/out.peftpack"
        Self.expectRefusal(try CLI.run(["import", Fixtures.path("numbers/inf_lora"), "-o", output]),
                           "model.layers.1.mlp.down_proj/B holds \(expected.inf) ±Inf of its \(expected.elements) elements", leaving: output)
    }

    @Test func allowNonFiniteKeepsTheTensorAndReportsIt() throws {
        let expected = try #require(Self.summary["inf_lora"]?.tensors["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"])
        let output = Fixtures.temporaryDirectory() + "/out.peftpack"
        let report = try PackImport.run(sources: [.init(path: Fixtures.path("numbers/inf_lora"), name: nil)], output: output,
                                        baseFolder: nil, level: 3, allowNonFinite: true)
        #expect(report.nonFiniteTensors.count == 1)
        #expect(report.nonFiniteTensors.first.map { ($0.nan, $0.infinite, $0.elements) } ?? (0, 0, 0) == (expected.nan, expected.inf, expected.elements))
        let result = try CLI.run(["import", Fixtures.path("numbers/inf_lora"), "-o", output + ".2", "--allow-nonfinite", "--json"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("\"nonFiniteTensors\""))
        #expect(result.stderr.contains("kept (--allow-nonfinite)"))
    }

    @Test func finiteAdapterReportsNoNonFiniteTensors() throws {
        let output = Fixtures.temporaryDirectory() + "/out.peftpack"
        let report = try PackImport.run(sources: [.init(path: Fixtures.path("numbers/adapter"), name: nil)], output: output, baseFolder: nil, level: 3)
        #expect(report.nonFiniteTensors.isEmpty)
    }

    // MARK: merge

    /// PEFT itself gives non-finite logits with this adapter; merge must not ship such weights.
    @Test func mergeRefusesNonFiniteResultAndWritesNothing() throws {
        #expect(Self.summary["inf_lora"]!.peft_logits_nonfinite > 0)
        let pack = try Self.pack("numbers/inf_lora", allowNonFinite: true)
        let output = Fixtures.temporaryDirectory() + "/merged"
        Self.expectRefusal(try CLI.run(["merge", "--base", Self.bf16Base, pack, "-o", output]),
                           "merged tensor model.layers.1.mlp.down_proj.weight would hold", leaving: output)
    }

    @Test func mergeRefusesNonFiniteWeightInCLIAndLibrary() throws {
        let pack = try Self.pack("numbers/adapter")
        for weight in ["nan", "inf", "-inf"] {
            let output = Fixtures.temporaryDirectory() + "/merged"
            Self.expectRefusal(try CLI.run(["merge", "--base", Self.bf16Base, pack, "--weight", weight, "-o", output]),
                               "--weight \(weight) is not a finite number", leaving: output)
        }
        let output = Fixtures.temporaryDirectory() + "/merged"
        #expect(throws: NonFiniteError.self) {
            try Merge.run(base: Self.bf16Base, inputs: [MergeInput(pack: pack, adapter: nil, weight: .nan)], output: output, options: .init())
        }
        #expect(!FileManager.default.fileExists(atPath: output))
    }

    /// ΔW from PEFT's exact fp64 merge (cases/llama_bf16_lora/exact_merge − base): a weight that
    /// takes max|W + w·ΔW| past fp16's 65504 must be refused, one that stays below it written.
    @Test func overflowToFP16IsANonFiniteResult() throws {
        let exact = try SafetensorsFile(path: Fixtures.path("cases/llama_bf16_lora/exact_merge.safetensors"))
        let base = try Checkpoint(path: Self.bf16Base)
        var largestDelta = 0.0, largestBase = 0.0
        for name in exact.names {
            let merged = try exact.tensor(name).floats(), original = try base.tensor(name).floats()
            for (m, o) in zip(merged, original) {
                largestDelta = max(largestDelta, abs(Double(m) - Double(o)))
                largestBase = max(largestBase, abs(Double(o)))
            }
        }
        let fp16Max = 65504.0
        let overflowing = 2 * (fp16Max + largestBase) / largestDelta
        let safe = 0.25 * (fp16Max - largestBase) / largestDelta
        let pack = try CLITests.importCase("llama_bf16_lora")
        let output = Fixtures.temporaryDirectory() + "/merged"
        Self.expectRefusal(try CLI.run(["merge", "--base", Self.bf16Base, pack, "--weight", "\(overflowing)", "--dtype", "fp16", "-o", output]),
                           "in F16 where the base is finite", leaving: output)
        let written = try CLI.run(["merge", "--base", Self.bf16Base, pack, "--weight", "\(safe)", "--dtype", "fp16", "-o", output])
        #expect(written.status == 0, "\(written.stderr)")
    }

    /// The general (non-fused) path: an IA3 merge scaled far past fp16's range.
    @Test func generalPathRefusesOverflow() throws {
        let pack = try CLITests.importCase("llama_ia3")
        let output = Fixtures.temporaryDirectory() + "/merged"
        Self.expectRefusal(try CLI.run(["merge", "--base", Fixtures.path("models/llama-tiny"), pack, "--weight", "1e30", "--dtype", "fp16", "-o", output]),
                           "where the base is finite", leaving: output)
    }

    @Test func skipUnmergeableWithNothingLeftIsRefused() throws {
        let pack = try CLITests.importCase("llama_prefix")
        let output = Fixtures.temporaryDirectory() + "/merged"
        Self.expectRefusal(try CLI.run(["merge", "--base", Fixtures.path("models/llama-tiny"), pack, "--skip-unmergeable", "-o", output]),
                           "nothing to merge: every adapter was left out as unmergeable (default)", leaving: output)
    }

    // MARK: the fused kernel

    /// Counted per element where the base is finite and the output is not, in the 8-wide loop
    /// and the scalar tail: IEEE arithmetic decides what is NaN or Inf.
    @Test(arguments: [(DType.bf16, DType.bf16), (.f32, .f16), (.f32, .f32), (.bf16, .f16)])
    func kernelCountsNonFiniteOutputsOfFiniteBases(baseType: DType, outType: DType) {
        let count = 19
        var baseValues = [Float](repeating: 1, count: count)
        var deltas = [Double](repeating: 0.5, count: count)
        deltas[2] = .nan            // NaN delta on a finite base: counted
        deltas[9] = .infinity       // Inf delta: counted
        baseValues[4] = .infinity   // already Inf in the base: not counted
        deltas[4] = 1
        deltas[17] = 1e300          // overflows every output type: counted (tail element)
        deltas[11] = 70000          // overflows fp16 only
        let base = HostTensor(floats: baseValues, shape: [count], dtype: baseType)
        var out = [UInt8](repeating: 0, count: count * outType.byteSize)
        var stats = peftpack_merge_stats()
        base.bytes.withUnsafeBytes { b in
            out.withUnsafeMutableBytes { o in
                peftpack_merge_add(LowRankMerge.elementType(baseType)!, b.baseAddress!, deltas, LowRankMerge.elementType(outType)!,
                                   o.baseAddress!, count, &stats)
            }
        }
        #expect(Int(stats.nonfinite) == (outType == .f16 ? 4 : 3))
        #expect(FiniteValues.count(HostTensor(dtype: outType, shape: [count], bytes: out)).total == Int(stats.nonfinite) + 1)
    }

    // MARK: stack and extract

    @Test func stackRefusesNonFiniteWeightAndFactors() throws {
        let good = try Self.pack("numbers/adapter")
        let output = Fixtures.temporaryDirectory() + "/stacked.peftpack"
        Self.expectRefusal(try CLI.run(["stack", good, good, "--weight", "1", "--weight", "nan", "-o", output]), "--weight nan is not a finite number", leaving: output)
        #expect(throws: NonFiniteError.self) {
            try Stack.run(inputs: [MergeInput(pack: good, adapter: nil, weight: .infinity)], output: output, options: .init())
        }
        let poisoned = try Self.pack("numbers/inf_lora", allowNonFinite: true)
        Self.expectRefusal(try CLI.run(["stack", poisoned, "-o", output]), "stacked/model.layers.1.mlp.down_proj/B: the stacked tensor holds", leaving: output)
    }

    @Test func extractRefusesANaNFineTune() throws {
        let folder = Fixtures.temporaryDirectory() + "/ft"
        try FileManager.default.copyItem(atPath: Fixtures.path("models/llama-tiny-ft"), toPath: folder)
        let file = folder + "/model.safetensors"
        let tensor = "model.layers.0.self_attn.q_proj.weight"
        var data = try Data(contentsOf: URL(fileURLWithPath: file))
        let headerLength = Int(data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        let header = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + headerLength))) as! [String: Any]
        let start = 8 + headerLength + ((header[tensor] as! [String: Any])["data_offsets"] as! [Int])[0]
        withUnsafeBytes(of: Float.nan.bitPattern.littleEndian) { data.replaceSubrange((start + 40)..<(start + 44), with: $0) }
        try data.write(to: URL(fileURLWithPath: file))
        let output = Fixtures.temporaryDirectory() + "/x.peftpack"
        Self.expectRefusal(try CLI.run(["extract", "--base", Fixtures.path("models/llama-tiny"), "--finetuned", folder, "-o", output]),
                           "\(tensor): ΔW = fine-tune − base (the fine-tune or the base holds NaN/Inf there) holds 1 NaN", leaving: output)
    }

    // MARK: verify --merged against a bf16 merge

    struct VerifyJSON: Decodable {
        struct Comparison: Decodable {
            struct Rounding: Decodable {
                var dtype: String
                var bound: Double
                var multiple: Double
                var ratio: Double
            }
            var maxAbsError: Double
            var referenceScale: Double
            var allowedAbsError: Double
            var rounding: Rounding?
            var passed: Bool
        }
        var comparisons: [Comparison]
    }

    static func verifyMerged(_ merged: String, extra: [String] = []) throws -> (CLI.Result, VerifyJSON.Comparison?) {
        let pack = try Self.pack("numbers/adapter")
        let arguments = ["verify", pack, "--base", Self.bf16Base, "--merged", Fixtures.path(merged), "--input-ids", "4,32"] + extra
        let json = try CLI.run(arguments + ["--json"])
        let decoded = try? JSONDecoder().decode(VerifyJSON.self, from: Data(json.stdout.utf8))
        return (try CLI.run(arguments), decoded?.comparisons.first)
    }

    /// PEFT's own merge_and_unload on the bf16 base passes at the default tolerance, which it
    /// failed before (max abs ~0.02 against 1e-5 + 1e-4 · scale); the bound is reported.
    @Test func peftsBF16MergePassesByDefault() throws {
        let (result, comparison) = try Self.verifyMerged("numbers/peft_merge")
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let found = try #require(comparison)
        let rounding = try #require(found.rounding)
        #expect(rounding.dtype == "BF16")
        #expect(found.maxAbsError > Verify.Tolerance.fp32.absolute + Verify.Tolerance.fp32.relative * found.referenceScale)
        #expect(rounding.ratio <= 2)
        #expect(result.stdout.contains("the bound"))
    }

    /// The merge PEFT made at adapter weight 0.8 fails with exit 1 and says how far outside the
    /// bound it is. The Python outputs show that this merge moves PEFT's own logits 0.66 from the
    /// adapter's where PEFT's correct merge is 0.013 away.
    @Test func wrongWeightMergeFailsNamingTheBound() throws {
        let reference = try SafetensorsFile(path: Fixtures.path("numbers/bf16_merge.ref.safetensors"))
        let adapter = try reference.tensor("output_adapter").floats()
        func distance(_ key: String) throws -> Double {
            zip(try reference.tensor(key).floats(), adapter).reduce(0) { max($0, abs(Double($1.0) - Double($1.1))) }
        }
        let peftDistance = try distance("output_peft_merge"), wrongDistance = try distance("output_wrong_merge")
        #expect(wrongDistance > 10 * peftDistance)

        let (result, comparison) = try Self.verifyMerged("numbers/wrong_merge")
        #expect(result.status == 1, "\(result.stdout)\(result.stderr)")
        let found = try #require(comparison)
        let rounding = try #require(found.rounding)
        #expect(rounding.ratio > rounding.multiple)
        #expect(!found.passed)
        #expect(result.stdout.contains("FAIL"))
        #expect(result.stdout.contains("× the bound"))
        #expect(result.stdout.contains("a correct bf16 merge reaches"))
    }

    /// Explicit tolerances replace the derived default, both ways.
    @Test func explicitToleranceOverridesTheDerivedDefault() throws {
        let (strict, _) = try Self.verifyMerged("numbers/peft_merge", extra: ["--atol", "1e-5"])
        #expect(strict.status == 1)
        let (loose, _) = try Self.verifyMerged("numbers/wrong_merge", extra: ["--atol", "10"])
        #expect(loose.status == 0)
    }

    /// A prefix adapter beside the LoRA: no merge can hold it, so there is no rounding bound to
    /// widen the tolerance with, and the comparison fails as before.
    @Test func unmergeableAdapterGetsNoBound() throws {
        let pack = Fixtures.temporaryDirectory() + "/both.peftpack"
        #expect(try CLI.run(["import", Fixtures.path("numbers/adapter"), Fixtures.path("cases/llama_prefix/adapter"), "-o", pack,
                             "--name", "lora", "--name", "prefix"]).status == 0)
        let result = try CLI.run(["verify", pack, "--base", Self.bf16Base, "--merged", Fixtures.path("numbers/peft_merge"), "--json"])
        #expect(result.status == 1)
        let decoded = try JSONDecoder().decode(VerifyJSON.self, from: Data(result.stdout.utf8))
        #expect(decoded.comparisons.first?.rounding == nil)
    }

    /// An fp32 merged model keeps the fp32 tolerance and reports no rounding bound.
    @Test func fp32MergedModelHasNoRoundingBound() throws {
        let pack = try CLITests.importCase("llama_lora")
        let result = try CLI.run(["verify", pack, "--base", Fixtures.path("models/llama-tiny"), "--merged", Fixtures.path("cases/llama_lora/merged"), "--json"])
        #expect(result.status == 0)
        let decoded = try JSONDecoder().decode(VerifyJSON.self, from: Data(result.stdout.utf8))
        #expect(decoded.comparisons.first?.rounding == nil)
    }
}
