import Testing
@testable import PeftPack

@Suite("Runtime fixture support")
struct RuntimeFixtureSupportTests {
    @Test("reference files carry rectangular input ids and fp32 outputs of the stated shape")
    func referenceShapes() throws {
        try #require(RuntimeFixtures.available, "fixtures/data is missing")
        let reference = try RuntimeFixtures.reference(case: "llama_lora")
        #expect(reference.inputIds.count == 2 && reference.inputIds.allSatisfy { $0.count == 7 })
        #expect(reference.outputBase.shape == [2, 7, 256])
        #expect(reference.metadata["output"] == "logits")
    }

    /// The runtime tests apply what the real importers made of each case; an importer that left a
    /// saved tensor out of every module would make them test less than the reference measures.
    @Test("every tensor of an imported case is named by some module", arguments: RuntimeFixtures.caseNames())
    func everyTensorNamed(caseName: String) throws {
        let imported = try ImportedCase.load(case: caseName)
        let named = Set(imported.adapters.flatMap { $0.modules.flatMap { $0.tensors.values } })
        #expect(named == Set(imported.tensors.keys))
    }
}
