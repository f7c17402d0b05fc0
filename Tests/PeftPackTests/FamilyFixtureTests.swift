import Foundation
import Testing
@testable import PeftPack

/// Every model family under fixtures/data/families (one folder per family, made by
/// fixtures/fixturegen/family_<name>.py with transformers 5.24 and PEFT 0.21.2): the base's and each
/// PEFT adapter's output, merge and extract, against the numbers the Python stack computed.
/// tests/python/check_families.py checks that transformers and PEFT load what these write.
///
/// Tolerance: 1e-5 of the reference's largest magnitude, as RuntimeReferenceTests: fp32 on both
/// sides in different summation orders (a few fp32 ulps through a few layers), while a wrong
/// scale, norm, mask or rope moves outputs by more than 1e-3 relative (each generator logs a
/// negative control that switches its family's feature off and moves the reference itself).
@Suite struct FamilyFixtureTests {
    static let tolerance = Verify.Tolerance(absolute: 0, relative: 1e-5)

    static var families: [String] {
        let root = Fixtures.path("families")
        return ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).filter {
            FileManager.default.fileExists(atPath: "\(root)/\($0)/model/config.json")
        }.sorted()
    }

    /// (family, case) for every adapter case of every family.
    static var cases: [String] {
        families.flatMap { family -> [String] in
            let root = Fixtures.path("families/\(family)/cases")
            return ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).sorted().map { "\(family)/\($0)" }
        }
    }

    static func base(_ family: String) -> String { Fixtures.path("families/\(family)/model") }

    static func parts(_ familyCase: String) -> (family: String, caseName: String) {
        let parts = familyCase.split(separator: "/").map(String.init)
        return (parts[0], parts[1])
    }

    static func reference(_ familyCase: String) -> String {
        let (family, caseName) = parts(familyCase)
        return Fixtures.path("families/\(family)/cases/\(caseName)/\(caseName).ref.safetensors")
    }

    static func pack(_ familyCase: String) throws -> String {
        let (family, caseName) = parts(familyCase)
        let output = Fixtures.temporaryDirectory() + "/\(caseName).peftpack"
        _ = try PackImport.run(sources: [.init(path: Fixtures.path("families/\(family)/cases/\(caseName)/adapter"), name: nil)],
                               output: output, baseFolder: base(family), level: 3)
        return output
    }

    /// Every registered family has a fixture here, so the parameterized tests below cannot pass by
    /// finding none and a family cannot be registered untested. The first families' fixtures live
    /// elsewhere (fixtures/data/models, tied/); OpenAI GPT is a layout without a runtime.
    @Test func everyNewFamilyHasFixtures() {
        let elsewhere: Set = ["bert", "gpt2", "llama", "qwen2", "openai-gpt"]
        let registered = Set(ArchitectureRegistry.all.map(\.modelType)).subtracting(elsewhere)
        let fixtured = Set(Self.families.compactMap { try? ModelConfig.load(contentsOf: URL(fileURLWithPath: Self.base($0) + "/config.json")).family.modelType })
        #expect(fixtured.isSuperset(of: registered), "\(registered.subtracting(fixtured).sorted())")
        #expect(Self.cases.count >= 3 * Self.families.count)
    }

    /// The base alone, as transformers computes it (each case's output_base).
    @Test(arguments: families)
    func baseOutputMatchesTransformers(family: String) throws {
        let caseName = try #require(Self.cases.first { $0.hasPrefix(family + "/") })
        let (model, _) = try Verify.loadModel(Self.base(family))
        #expect(model.unusedWeights.isEmpty, "\(model.unusedWeights)")
        let comparison = try ReferenceFile(path: Self.reference(caseName)).compare(model, with: "output_base", label: "base", tolerance: Self.tolerance)
        #expect(comparison.passed, "\(family): max rel \(comparison.maxRelError)")
    }

    /// `verify --reference`: the imported adapter at run time against PEFT's output.
    @Test(arguments: cases)
    func adapterMatchesPeft(familyCase: String) throws {
        let report = try Verify.run(pack: try Self.pack(familyCase), base: Self.base(Self.parts(familyCase).family), adapterNames: [],
                                    targets: [.reference(path: Self.reference(familyCase), key: "output_adapter")],
                                    inputShape: (2, 7), seed: 0, tolerance: Self.tolerance)
        #expect(report.passed, "\(familyCase): max rel \(report.comparisons[0].maxRelError)")
    }

    /// The merged folder, run by the Swift runtime, gives the adapter's output.
    @Test(arguments: cases)
    func mergeKeepsTheAdaptersFunction(familyCase: String) throws {
        let output = Fixtures.temporaryDirectory() + "/merged"
        _ = try Merge.run(base: Self.base(Self.parts(familyCase).family), inputs: [MergeInput(pack: try Self.pack(familyCase), adapter: nil, weight: 1)],
                          output: output, options: .init())
        let (model, _) = try Verify.loadModel(output)
        let comparison = try ReferenceFile(path: Self.reference(familyCase)).compare(model, with: "output_adapter", label: "merged", tolerance: Self.tolerance)
        #expect(comparison.passed, "\(familyCase): max rel \(comparison.maxRelError)")
    }

    /// extract at full rank from the family's small fine-tune reproduces its logits.
    @Test(arguments: families)
    func extractAtFullRankReproducesTheFineTune(family: String) throws {
        let pack = Fixtures.temporaryDirectory() + "/\(family)-ft.peftpack"
        _ = try Extract.run(base: Self.base(family), finetuned: Fixtures.path("families/\(family)/model-ft"), output: pack,
                            options: .init(rule: .fixed(256), exact: true))
        let report = try Verify.run(pack: pack, base: Self.base(family), adapterNames: [],
                                    targets: [.reference(path: Fixtures.path("families/\(family)/model-ft.ref.safetensors"), key: "output_adapter")],
                                    inputShape: (2, 7), seed: 0, tolerance: Self.tolerance)
        #expect(report.passed, "\(family): max rel \(report.comparisons[0].maxRelError)")
    }

    /// Families llama.cpp runs export their LoRA case to GGUF with the family's llama.cpp
    /// architecture; tests/python/check_gguf_exports.py checks the names and numbers.
    @Test(arguments: families)
    func loraExportsToGGUFWhereLlamaCppRunsTheFamily(family: String) throws {
        let config = try ModelConfig.load(contentsOf: URL(fileURLWithPath: Self.base(family) + "/config.json"))
        guard let llamaCpp = config.family.llamaCpp else { return }
        let output = Fixtures.temporaryDirectory() + "/\(family).gguf"
        _ = try PackExport.run(pack: try Self.pack("\(family)/\(family)_lora"), output: output, format: .gguf, name: nil, force: false)
        let file = try GGUF.File(path: output)
        #expect(file.value("general.architecture")?.stringValue == llamaCpp.architecture)
        #expect(!file.tensors.isEmpty)
    }
}
