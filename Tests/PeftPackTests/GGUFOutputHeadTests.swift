import Foundation
import Testing
@testable import PeftPack

/// A LoRA on an untied lm_head (fixtures/data/gguf_head, made by PEFT): PEFT saves the head's base
/// layer beside the factors; GGUF export drops it only when it is provably the base's own weight,
/// as llama.cpp's converter drops it unconditionally. tests/python/check_gguf_exports.py compares
/// the numbers with PEFT and with convert_lora_to_gguf.py.
@Suite struct GGUFOutputHeadTests {
    static let adapter = Fixtures.path("gguf_head/cases/llama_lora_head/adapter")

    static func pack(base: String?) throws -> String {
        let output = Fixtures.temporaryDirectory() + "/llama_lora_head.peftpack"
        _ = try PackImport.run(sources: [.init(path: adapter, name: nil)], output: output,
                               baseFolder: base.map(Fixtures.path), level: 3)
        return output
    }

    static func export(_ pack: String) throws -> String {
        let output = Fixtures.temporaryDirectory() + "/llama_lora_head.gguf"
        _ = try PackExport.run(pack: pack, output: output, format: .gguf, name: nil, force: false)
        return output
    }

    @Test func headLoRAExportsAsOutputWeight() throws {
        let file = try GGUF.File(path: try Self.export(try Self.pack(base: "models/llama-tiny")))
        let names = Set(file.tensors.map(\.name))
        #expect(names.contains("output.weight.lora_a") && names.contains("output.weight.lora_b"))
        #expect(names.count == 2 * 5, "\(names.sorted())")
    }

    /// On a tied base (fixtures/data/tied: Qwen2 with tie_word_embeddings) the pack records the
    /// head under the embedding it is stored as; the saved base layer is found there, and the head
    /// LoRA exports as output.weight's (whether llama.cpp applies it to a tied model's head is not
    /// checked here: scripts/llamacpp-e2e.sh runs llama.cpp).
    @Test func headLoRAOnATiedBaseExports() throws {
        let pack = Fixtures.temporaryDirectory() + "/tied_head.peftpack"
        _ = try PackImport.run(sources: [.init(path: Fixtures.path("tied/cases/qwen2_tied_lora_head/adapter"), name: nil)], output: pack,
                               baseFolder: Fixtures.path("tied/models/qwen2-tied-tiny"), level: 3)
        let file = try GGUF.File(path: try Self.export(pack))
        #expect(file.tensors.contains { $0.name == "output.weight.lora_b" }, "\(file.tensors.map(\.name))")
    }

    /// Without a recorded base nothing shows the saved base layer unchanged (nor the family):
    /// refused, with the kind the CLI turns into "import with --base".
    @Test func packWithoutBaseIsRefused() throws {
        let pack = try Self.pack(base: nil)
        let error = try #require(throws: InputError.self) { _ = try Self.export(pack) }
        #expect(error.kind == .baseNotRecorded, "\(error.problem)")
    }

    /// Control: recorded against another checkpoint of the same shapes (the fine-tune), the saved
    /// base layer differs from the recorded head and is refused, not dropped.
    @Test func baseLayerOtherThanTheRecordedBaseIsRefused() throws {
        let pack = try Self.pack(base: "models/llama-tiny-ft")
        let error = try #require(throws: InputError.self) { _ = try Self.export(pack) }
        #expect(error.problem.contains("differs from the base"), "\(error.problem)")
    }
}
