import Foundation
import Testing
@testable import PeftPack

/// The whole user path on every fixture: import the adapter folder as the CLI does, write a pack,
/// then verify the pack in the Swift runtime against the output the Python stack recorded.
@Suite struct PipelineVerifyTests {
    static let cases: [String] = {
        let folder = Fixtures.data.appendingPathComponent("cases").path
        return (try! FileManager.default.contentsOfDirectory(atPath: folder)).sorted()
    }()

    static func baseFolder(of caseName: String) throws -> String {
        let reference = try SafetensorsFile(path: Fixtures.path("cases/\(caseName)/\(caseName).ref.safetensors"))
        return Fixtures.path(reference.metadata!["base"]!)
    }

    static func adapterFolder(of caseName: String) -> String {
        let peft = Fixtures.path("cases/\(caseName)/adapter")
        return FileManager.default.fileExists(atPath: peft) ? peft : Fixtures.path("cases/\(caseName)/adapter_bin")
    }

    static func pack(_ caseName: String) throws -> String {
        let output = Fixtures.temporaryDirectory() + "/\(caseName).peftpack"
        _ = try PackImport.run(sources: [.init(path: adapterFolder(of: caseName), name: nil)], output: output,
                               baseFolder: try baseFolder(of: caseName), level: 3)
        return output
    }

    /// fp32 on both sides, different summation order: errors of a few ulps of the output scale
    /// (observed ≤ 1e-6 relative); 1e-5 relative is tight enough that any perturbation of an
    /// adapter tensor (≥ 1e-4, see the negative controls) fails.
    static let tolerance = Verify.Tolerance(absolute: 0, relative: 1e-5)

    @Test func everyCaseIsCovered() { #expect(Self.cases.count == 18) }

    @Test(arguments: cases)
    func importedPackReproducesThePythonReference(caseName: String) throws {
        let pack = try Self.pack(caseName)
        let report = try Verify.run(pack: pack, base: Self.baseFolder(of: caseName), adapterNames: [],
                                    targets: [.reference(path: Fixtures.path("cases/\(caseName)/\(caseName).ref.safetensors"), key: nil)],
                                    inputShape: (2, 7), seed: 0, tolerance: Self.tolerance)
        #expect(report.passed, "\(caseName): max rel \(report.comparisons[0].maxRelError)")
    }

    /// The base alone matches output_base: the runtime is right before adapters enter.
    @Test(arguments: ["llama_lora", "bert_lora_bias", "gpt2_prefix", "llama_bf16_lora"])
    func baseModelAloneMatchesOutputBase(caseName: String) throws {
        let (model, _) = try Verify.loadModel(Self.baseFolder(of: caseName))
        let reference = try SafetensorsFile(path: Fixtures.path("cases/\(caseName)/\(caseName).ref.safetensors"))
        let ids = try reference.tensor("input_ids")
        let flat = ids.bytes.withUnsafeBytes { raw in (0..<ids.elementCount).map { Int(raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) } }
        let rows = (0..<ids.shape[0]).map { Array(flat[($0 * ids.shape[1])..<(($0 + 1) * ids.shape[1])]) }
        let output = try model.forward(inputIds: rows)
        let expected = try reference.tensor("output_base")
        let comparison = try Verify.compare(output, FloatTensor(shape: expected.shape, values: expected.floats()), label: caseName, logits: false, tolerance: Self.tolerance)
        #expect(comparison.passed, "\(caseName): max rel \(comparison.maxRelError)")
    }

    @Test(arguments: ["llama_lora", "gpt2_lora_fan_in_fan_out", "llama_dora", "llama_ia3", "bert_ia3"])
    func unmergedAdapterMatchesPeftMergedModel(caseName: String) throws {
        let report = try Verify.run(pack: Self.pack(caseName), base: Self.baseFolder(of: caseName), adapterNames: [],
                                    targets: [.merged(folder: Fixtures.path("cases/\(caseName)/merged"))],
                                    inputShape: (2, 12), seed: 3, tolerance: .init(absolute: 0, relative: 1e-5))
        #expect(report.passed, "\(caseName): max rel \(report.comparisons[0].maxRelError)")
    }
}
