import Foundation
import Testing
@testable import PeftPack

/// Runtime outputs against the transformers / PEFT / AdapterHub outputs stored with each case.
///
/// Tolerance: 1e-5 of the reference's largest magnitude. Both sides compute in fp32 but sum in
/// different orders (OpenBLAS vs. torch's kernels); through two layers and a softmax that leaves
/// differences of a few fp32 ulps of the largest values (~1e-7 relative each), so 1e-5 leaves two
/// orders of margin while any real semantic slip (a wrong scale, mask, bias or position) moves the
/// outputs by more than 1e-3 relative; the negative controls show it.
@Suite("Runtime vs Python references")
struct RuntimeReferenceTests {
    static let tolerance = 1e-5

    @Test("base model output", arguments: ["bert-tiny", "llama-tiny", "gpt2-tiny", "llama-tiny-bf16"])
    func baseModel(model: String) throws {
        try #require(RuntimeFixtures.available, "fixtures/data is missing")
        // Every base is referenced by some case; take that case's output_base.
        let caseName = try #require(RuntimeFixtures.caseNames().first { name in
            (try? RuntimeFixtures.reference(case: name).metadata["base"]) == "models/\(model)"
        })
        let reference = try RuntimeFixtures.reference(case: caseName)
        let runtime = try RuntimeFixtures.model("models/\(model)")
        #expect(runtime.unusedWeights.isEmpty)
        let output = try runtime.forward(inputIds: reference.inputIds)
        let error = RuntimeFixtures.relativeError(output, reference.outputBase)
        print("base \(model): relative error \(error)")
        #expect(error <= Self.tolerance)
    }

    @Test("adapter applied at run time", arguments: RuntimeFixtures.caseNames())
    func adapterCase(caseName: String) throws {
        let reference = try RuntimeFixtures.reference(case: caseName)
        let base = try #require(reference.metadata["base"])
        let model = try RuntimeFixtures.model(base)
        let imported = try ImportedCase.load(case: caseName)
        let adapters = try AdapterSet(adapters: imported.adapters, model: model, tensor: imported.tensor)

        let baseError = RuntimeFixtures.relativeError(try model.forward(inputIds: reference.inputIds),
                                                      reference.outputBase)
        let output = try model.forward(inputIds: reference.inputIds, adapters: adapters)
        let error = RuntimeFixtures.relativeError(output, reference.outputAdapter)
        print("\(caseName): relative error \(error) (base \(baseError))")
        #expect(baseError <= Self.tolerance)
        #expect(error <= Self.tolerance)
    }
}
