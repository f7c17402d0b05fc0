import Foundation
import Testing
@testable import PeftPack

/// verify on BertForSequenceClassification and LlamaForSequenceClassification bases with a PEFT
/// SEQ_CLS LoRA (PEFT adds the head, classifier / score, to modules_to_save). References:
/// transformers + PEFT logits [2, 3] on the fixed input, and PEFT's merge_and_unload.
@Suite struct SequenceClassificationTests {
    static let cases = ["bert_seq_cls", "llama_seq_cls"]

    @Test(arguments: cases)
    func adapterAppliedAtRunTimeReproducesPeft(caseName: String) throws {
        let (pack, _) = try ConfigFixtures.pack(caseName)
        let comparison = try ConfigFixtures.verify(pack, against: caseName)
        #expect(comparison.shape == [2, 3])
        #expect(comparison.top1Agreement != nil)
        #expect(comparison.passed, "max rel \(comparison.maxRelError)")
    }

    @Test(arguments: cases)
    func baseAloneReproducesTransformers(caseName: String) throws {
        let (model, _) = try Verify.loadModel(ConfigFixtures.baseFolder(of: caseName))
        #expect(model.unusedWeights.isEmpty)
        let comparison = try ReferenceFile(path: ConfigFixtures.reference(caseName))
            .compare(model, with: "output_base", label: caseName, tolerance: ConfigFixtures.tolerance)
        #expect(comparison.passed, "max rel \(comparison.maxRelError)")
    }

    /// Negative control: the trained head (modules_to_save) is part of what the reference measures.
    @Test(arguments: cases)
    func theTrainedHeadMovesTheReference(caseName: String) throws {
        let (pack, _) = try ConfigFixtures.pack(caseName)
        let reader = try PackReader(path: pack)
        var adapter = try reader.adapterDocument().adapters[0]
        adapter.modules.removeAll { $0.mode != nil }
        let (model, _) = try Verify.loadModel(ConfigFixtures.baseFolder(of: caseName))
        let adapters = try AdapterSet(adapters: [adapter], model: model, tensor: reader.readTensor)
        let comparison = try ReferenceFile(path: ConfigFixtures.reference(caseName))
            .compare(model, adapters: adapters, with: "output_adapter", label: caseName, tolerance: ConfigFixtures.tolerance)
        print("\(caseName) without its head: max abs \(comparison.maxAbsError)")
        #expect(comparison.maxRelError > 1e-3)
    }

    @Test(arguments: cases)
    func verifyMergedAgainstPeftsMerge(caseName: String) throws {
        let (pack, _) = try ConfigFixtures.pack(caseName)
        let result = try CLI.run(["verify", pack, "--base", try ConfigFixtures.baseFolder(of: caseName),
                                  "--merged", ConfigFixtures.path("\(caseName)/merged"), "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("\"passed\" : true"))
    }

    /// transformers' rule: the rightmost position whose id is not pad_token_id, position 0 when a
    /// row is all padding, the last position when there is no pad token or virtual tokens lead.
    @Test func decoderClassifiesTheLastNonPadToken() {
        #expect(ForwardPass.lastNonPadPosition([5, 6, 7, 0, 0], pad: 0, promptLength: 0) == 2)
        #expect(ForwardPass.lastNonPadPosition([0, 0, 5, 6], pad: 0, promptLength: 0) == 3)
        #expect(ForwardPass.lastNonPadPosition([0, 0, 0], pad: 0, promptLength: 0) == 0)
        #expect(ForwardPass.lastNonPadPosition([5, 0], pad: nil, promptLength: 0) == 1)
        #expect(ForwardPass.lastNonPadPosition([5, 0], pad: 0, promptLength: 4) == 5)
    }

    /// Right padding picks the same logits as the unpadded sequence.
    @Test func rightPaddingGivesTheUnpaddedLogits() throws {
        let (model, _) = try Verify.loadModel(ConfigFixtures.baseFolder(of: "llama_seq_cls"))
        let plain = try model.forward(inputIds: [[175, 196, 25, 246, 67]])
        let padded = try model.forward(inputIds: [[175, 196, 25, 246, 67, 0, 0]])
        #expect(plain.shape == [1, 3])
        for (a, b) in zip(plain.values, padded.values) { #expect(abs(a - b) <= 1e-5 * max(1, abs(a))) }
    }

    /// Without pad_token_id transformers refuses a batch of several sequences; so does verify.
    @Test func batchWithoutPadTokenIsRefused() throws {
        let folder = Fixtures.temporaryDirectory()
        let source = try ConfigFixtures.baseFolder(of: "llama_seq_cls")
        try FileManager.default.copyItem(atPath: source + "/model.safetensors", toPath: folder + "/model.safetensors")
        let config = try String(contentsOfFile: source + "/config.json", encoding: .utf8)
            .replacingOccurrences(of: "\"pad_token_id\": 0", with: "\"pad_token_id\": null")
        try config.write(toFile: folder + "/config.json", atomically: true, encoding: .utf8)
        let (model, _) = try Verify.loadModel(folder)
        #expect(throws: RuntimeError.self) { try model.forward(inputIds: [[1, 2], [3, 4]]) }
        #expect(try model.forward(inputIds: [[1, 2]]).shape == [1, 3])
    }
}

/// Refusals that name what is unsupported instead of a confusing symptom.
@Suite struct UnsupportedMethodTests {
    @Test(arguments: [("adapterhub_lora", "LoRA"), ("adapterhub_ia3", "IA3"), ("adapterhub_prefix", "prefix tuning")])
    func adapterHubMethodsAreRefusedByName(caseName: String, method: String) throws {
        let output = Fixtures.temporaryDirectory() + "/out.peftpack"
        let result = try CLI.run(["import", ConfigFixtures.path("\(caseName)/adapter"), "-o", output])
        #expect(result.status == 2)
        #expect(result.stderr.contains("AdapterHub \(method) adapters are not supported yet; peftpack reads AdapterHub bottleneck adapters (Houlsby, Pfeiffer)"), "\(result.stderr)")
        #expect(!result.stderr.contains("non_linearity") && !result.stderr.contains("is not a tensor of adapter"))
    }

    /// A pack imported with --base for an architecture GGUF export has no mapping for is told so,
    /// not to import it with --base.
    @Test func ggufExportNamesTheUnsupportedArchitecture() throws {
        let pack = Fixtures.temporaryDirectory() + "/bert.peftpack"
        _ = try PackImport.run(sources: [.init(path: Fixtures.path("cases/bert_lora_bias/adapter"), name: nil)], output: pack,
                               baseFolder: Fixtures.path("models/bert-tiny"), level: 3)
        let result = try CLI.run(["export", pack, "-o", Fixtures.temporaryDirectory() + "/out.gguf"])
        #expect(result.status == 2)
        // The supported list grows with the registered families; it names llama.cpp's classes, never BERT.
        #expect(result.stderr.contains("is for a BertModel, model_type bert base, which GGUF export does not support (it supports GPT2LMHeadModel, "), "\(result.stderr)")
        #expect(result.stderr.contains("LlamaForCausalLM") && !result.stderr.contains("(it supports Bert"))
        #expect(!result.stderr.contains("--base"))
    }
}
