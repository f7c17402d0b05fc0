import Foundation
import Testing
@testable import PeftPack

/// Every model family under fixtures/data/families (transformers 5.24 / PEFT 0.21, found by
/// listing): the runtime's base output, each PEFT case imported with its base and run, merged and
/// run, a full-rank extract of the fine-tune, and the GGUF export of the LoRA case where llama.cpp
/// supports the family, all against the Python outputs. tests/python/check_families.py checks the
/// same merges and exports in transformers and PEFT.
///
/// Tolerance: 1e-5 of the reference's largest magnitude, as RuntimeReferenceTests: both sides
/// compute in fp32 and sum in different orders (observed ≤ 2e-6 relative), while any semantic slip
/// (window, head size, norm, scale, row order) moves the logits by more than 1e-3 relative, as the
/// generator's negative controls and the family suites show.
@Suite struct FamilyReferenceTests {
    static let tolerance = 1e-5

    @Test func everyFamilyHasItsFixtures() throws {
        #expect(FamilyFixtures.families.count >= 2, "families: \(FamilyFixtures.families)")
        for family in FamilyFixtures.families {
            #expect(FileManager.default.fileExists(atPath: FamilyFixtures.finetunedReference(family)), "\(family)")
            #expect(FamilyFixtures.cases.filter { $0.hasPrefix(family + "/") }.count >= 3, "\(family)")
        }
    }

    /// The base alone, loaded with no tensor left unused, against every case's output_base.
    @Test(arguments: FamilyFixtures.families)
    func baseOutput(family: String) throws {
        let model = try FamilyFixtures.model(FamilyFixtures.base(family))
        #expect(model.unusedWeights.isEmpty, "\(family): unused \(model.unusedWeights)")
        for reference in FamilyFixtures.cases.filter({ $0.hasPrefix(family + "/") }).map(FamilyFixtures.reference)
            + [FamilyFixtures.finetunedReference(family)] {
            let error = try FamilyFixtures.relativeError(FamilyFixtures.base(family), against: "output_base", of: reference)
            #expect(error <= Self.tolerance, "\(reference): relative error \(error)")
        }
    }

    /// `import --base` then `verify --reference`: the runtime applies the adapter as PEFT does.
    @Test(arguments: FamilyFixtures.cases)
    func adapterAtRunTime(familyCase: String) throws {
        let report = try FamilyFixtures.verify(try FamilyFixtures.importedPack(familyCase),
                                               base: FamilyFixtures.base(FamilyFixtures.family(of: familyCase)),
                                               reference: FamilyFixtures.reference(familyCase), rtol: Self.tolerance)
        let (passed, error) = FamilyFixtures.firstComparison(report)
        #expect(passed && error <= Self.tolerance, "\(familyCase): relative error \(error)")
    }

    /// `merge`: the merged folder, run by the runtime, gives PEFT's adapter output, and keeps the
    /// base's head as the base stores it (tied bases write no lm_head.weight).
    @Test(arguments: FamilyFixtures.cases)
    func mergedFolder(familyCase: String) throws {
        let family = FamilyFixtures.family(of: familyCase)
        let merged = Fixtures.temporaryDirectory() + "/merged"
        try CLI.succeed(["merge", "--base", FamilyFixtures.base(family), try FamilyFixtures.importedPack(familyCase),
                         "-o", merged, "--quiet"])
        let error = try FamilyFixtures.relativeError(merged, against: "output_adapter", of: FamilyFixtures.reference(familyCase))
        #expect(error <= Self.tolerance, "\(familyCase): relative error \(error)")
        let baseHead = try Checkpoint(path: FamilyFixtures.base(family)).info("lm_head.weight") != nil
        #expect((try Checkpoint(path: merged).info("lm_head.weight") != nil) == baseHead)
        #expect(try FamilyFixtures.model(merged).config.tieWordEmbeddings == FamilyFixtures.model(FamilyFixtures.base(family)).config.tieWordEmbeddings)
    }

    /// `extract` at full rank (exact SVD): the pack reproduces the fine-tune's logits.
    @Test(arguments: FamilyFixtures.families)
    func fullRankExtract(family: String) throws {
        let pack = Fixtures.temporaryDirectory() + "/ft.peftpack"
        try CLI.succeed(["extract", "--base", FamilyFixtures.base(family), "--finetuned", FamilyFixtures.finetuned(family),
                         "-o", pack, "--rank", "4096", "--exact", "--quiet"])
        let report = try FamilyFixtures.verify(pack, base: FamilyFixtures.base(family),
                                               reference: FamilyFixtures.finetunedReference(family), rtol: Self.tolerance)
        let (passed, error) = FamilyFixtures.firstComparison(report)
        #expect(passed && error <= Self.tolerance, "\(family): relative error \(error)")
    }

    /// The LoRA case of every family llama.cpp supports, exported to GGUF (its architecture name,
    /// names and row order) and imported back with the base, still gives PEFT's output; a family
    /// without llama.cpp support is refused with one line. check_gguf_exports.py compares the file
    /// with PEFT's ΔW and with llama.cpp's own converter.
    @Test(arguments: FamilyFixtures.families)
    func ggufRoundTrip(family: String) throws {
        let familyCase = "\(family)/\(family)_lora"
        let pack = try FamilyFixtures.importedPack(familyCase)
        let gguf = Fixtures.temporaryDirectory() + "/\(family).gguf"
        let export = try CLI.run(["export", pack, "-o", gguf, "--format", "gguf"])
        let architecture = try FamilyFixtures.model(FamilyFixtures.base(family)).config.family
        guard let llamaCpp = architecture.llamaCpp else {
            #expect(export.status == 2 && export.stderr.split(separator: "\n").count == 1, "\(family): \(export.stderr)")
            return
        }
        #expect(export.status == 0, "\(family): \(export.stderr)")
        #expect(try GGUF.File(path: gguf).value("general.architecture")?.stringValue == llamaCpp.architecture)
        let back = Fixtures.temporaryDirectory() + "/back.peftpack"
        try CLI.succeed(["import", gguf, "--base", FamilyFixtures.base(family), "-o", back, "--quiet"])
        let report = try FamilyFixtures.verify(back, base: FamilyFixtures.base(family),
                                               reference: FamilyFixtures.reference(familyCase), rtol: Self.tolerance)
        let (passed, error) = FamilyFixtures.firstComparison(report)
        #expect(passed && error <= Self.tolerance, "\(family): relative error \(error)")
    }
}
