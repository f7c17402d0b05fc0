import Foundation
import Testing
@testable import PeftPack

/// The streaming runtime (weights widened per use, in tiles, from the mapped checkpoint) against
/// the torch references and against the runtime that widens every weight at load.
@Suite("Streaming runtime")
struct StreamingRuntimeTests {
    /// Every base model of the fixtures, each with a reference file holding transformers'
    /// `output_base` on its ids: the five original bases and one per family folder.
    static let bases: [(folder: String, reference: String)] = [
        ("models/bert-tiny", "cases/bert_ia3/bert_ia3.ref.safetensors"),
        ("models/gpt2-tiny", "cases/gpt2_dora/gpt2_dora.ref.safetensors"),
        ("models/llama-tiny", "cases/llama_lora/llama_lora.ref.safetensors"),
        ("models/llama-tiny-bf16", "cases/llama_bf16_lora/llama_bf16_lora.ref.safetensors"),
    ] + ["gemma2", "gemma3", "mistral", "phi3", "qwen3"].map { ("families/\($0)/model", "families/\($0)/model-ft.ref.safetensors") }

    static func load(_ folder: String, _ residency: WeightResidency) throws -> TransformerModel {
        let path = Fixtures.path(folder)
        let config = try ModelConfig.load(contentsOf: URL(fileURLWithPath: path).appendingPathComponent("config.json"))
        return try TransformerModel.load(config: config, weights: try Checkpoint(path: path), residency: residency)
    }

    /// Logits computed `step` vocabulary entries at a time, put back together.
    static func assembled(_ logits: VocabularyLogits, step: Int) throws -> FloatTensor {
        let vocabulary = logits.vocabulary
        var values = [Float](repeating: 0, count: logits.hidden.rows * vocabulary)
        for start in stride(from: 0, to: vocabulary, by: step) {
            let columns = start..<min(start + step, vocabulary)
            let tile = try logits.tile(columns)
            for row in 0..<tile.rows {
                for (offset, column) in columns.enumerated() { values[row * vocabulary + column] = tile.values[row * tile.cols + offset] }
            }
        }
        return FloatTensor(shape: logits.shape, values: values)
    }

    /// Tiles of 1000 floats split every matrix of the fixtures (hidden 64: 15 rows per tile)
    /// and GPT-2's Conv1D ones along their inputs, so the tiled products run on every family.
    static let tinyTiles = WeightResidency.streamed(tileFloats: 1000)

    /// Tolerance 1e-5 relative, the suite-wide bound against torch (RuntimeReferenceTests gives
    /// the reason); streaming changes no arithmetic, so it must hold unchanged.
    @Test("streamed in tiles, each base matches transformers", arguments: bases.map(\.folder))
    func tiledMatchesTorch(folder: String) throws {
        let reference = try ReferenceFile(path: Fixtures.path(Self.bases.first { $0.folder == folder }!.reference))
        let model = try Self.load(folder, Self.tinyTiles)
        let error = RuntimeFixtures.relativeError(try model.forward(inputIds: try reference.inputRows()), try reference.output("output_base"))
        #expect(error <= 1e-5, "\(folder): \(error)")
    }

    /// Tolerance 1e-6 relative: the same products in the same order except where a Conv1D tile
    /// splits the sum over inputs (a few ulps), far below any semantic change.
    @Test("streamed, whole or in tiles, equals widened at load", arguments: bases.map(\.folder))
    func streamedEqualsWidened(folder: String) throws {
        let ids = try ReferenceFile(path: Fixtures.path(Self.bases.first { $0.folder == folder }!.reference)).inputRows()
        let widened = try Self.load(folder, .widenedAtLoad).forward(inputIds: ids)
        for residency in [WeightResidency.streamed, Self.tinyTiles] {
            let streamed = try Self.load(folder, residency).forward(inputIds: ids)
            let error = RuntimeFixtures.relativeError(streamed, widened)
            print("\(folder) streamed, tiles of \(residency.tileFloats!) floats, vs widened at load: relative \(error)")
            #expect(error <= 1e-6, "\(folder) tiles \(residency.tileFloats!): \(error)")
        }
    }

    /// Every adapter case, streamed in tiles, against PEFT / AdapterHub (1e-5 as above): the
    /// adapters' own tensors and replacements (modules_to_save, trainable tokens) stay whole.
    @Test("adapters on a tiled base match the Python references", arguments: RuntimeFixtures.caseNames())
    func adapterCaseTiled(caseName: String) throws {
        let reference = try RuntimeFixtures.reference(case: caseName)
        let model = try Self.load(try #require(reference.metadata["base"]), Self.tinyTiles)
        let imported = try ImportedCase.load(case: caseName)
        let adapters = try AdapterSet(adapters: imported.adapters, model: model, tensor: imported.tensor)
        let error = RuntimeFixtures.relativeError(try model.forward(inputIds: reference.inputIds, adapters: adapters), reference.outputAdapter)
        #expect(error <= 1e-5, "\(caseName): \(error)")
    }

    /// The runtime's weight memory is one tensor (or one tile), not the model. On llama-tiny the
    /// largest tensor is the 256 × 64 embedding or head (16384 floats), the model about 6× that;
    /// the load-everything path is the negative control and must exceed the bound.
    @Test("widened weights alive at once: one tensor or tile, not the model")
    func wideningHighWaterMark() throws {
        let folder = "models/llama-tiny"
        let checkpoint = try Checkpoint(path: Fixtures.path(folder))
        let sizes = checkpoint.infos.map { $0.elementCount! }
        let (largest, total) = (sizes.max()!, sizes.reduce(0, +))
        #expect(total > 4 * largest)
        let ids = [[1, 2, 3, 4], [5, 6, 7, 8]]

        let streamed = try Self.load(folder, .streamed)
        _ = try streamed.forward(inputIds: ids)
        #expect(streamed.peakWidenedFloats > 0 && streamed.peakWidenedFloats <= largest)

        let tiled = try Self.load(folder, .streamed(tileFloats: 1024))
        _ = try tiled.forward(inputIds: ids)
        #expect(tiled.peakWidenedFloats <= 1024)

        let widened = try Self.load(folder, .widenedAtLoad)
        _ = try widened.forward(inputIds: ids)
        #expect(widened.peakWidenedFloats > largest)
        #expect(widened.peakWidenedFloats == total, "llama-tiny is untied and uses every tensor")
    }

    /// A causal LM's logits computed over tiles of 37 vocabulary entries (head weights, a
    /// modules_to_save head and tied heads sliced by rows) against the whole logits, for every
    /// decoder base and every adapter case on one. Tolerance 1e-6 relative: the same dot products,
    /// blocked differently by BLAS.
    @Test("logits over vocabulary tiles equal the whole logits",
          arguments: bases.map(\.folder).filter { !$0.contains("bert") } + RuntimeFixtures.caseNames().filter { !$0.hasPrefix("bert") })
    func vocabularyTiles(source: String) throws {
        let isCase = !source.contains("/")
        let reference = isCase ? try RuntimeFixtures.reference(case: source) : nil
        let model = try Self.load(reference?.metadata["base"] ?? source, .streamed)
        let imported = try isCase ? ImportedCase.load(case: source) : nil
        let adapters = try imported.map { try AdapterSet(adapters: $0.adapters, model: model, tensor: $0.tensor) }
        let ids = try reference?.inputIds ?? ReferenceFile(path: Fixtures.path(Self.bases.first { $0.folder == source }!.reference)).inputRows()
        let whole = try model.forward(inputIds: ids, adapters: adapters)
        guard case .tiles(let deferred) = try model.forwardToHead(inputIds: ids, adapters: adapters, progress: nil, observeLayer: nil) else {
            Issue.record("a causal LM defers its head")
            return
        }
        #expect(deferred.shape == whole.shape)
        let error = RuntimeFixtures.relativeError(try Self.assembled(deferred, step: 37), whole)
        #expect(error <= 1e-6, "\(source): \(error)")
    }

    /// The head's own low-rank updates sliced with it: a DoRA update (per-output factor) and a
    /// LoRA with lora_B's bias on llama-tiny's lm_head, random factors (no fixture adapts the
    /// head). Tiles of 37 entries against the whole logits, 1e-6 relative as above.
    @Test("low-rank updates of the output head over vocabulary tiles")
    func headUpdatesOverTiles() throws {
        let model = try Self.load("models/llama-tiny", .streamed)
        var generator = RuntimeBenchmarkTests.SplitMix()
        var tensors: [String: HostTensor] = [:]
        func random(_ name: String, _ shape: [Int], around center: Float = 0) -> String {
            tensors[name] = HostTensor(floats: (0..<shape.reduce(1, *)).map { _ in center + Float.random(in: -0.1...0.1, using: &generator) },
                                       shape: shape, dtype: .f32)
            return name
        }
        let dora = AdapterModule(target: "lm_head", change: .lowRank(LowRankModule(layout: .linear, rank: 4, scale: 2)),
                                 tensors: [TensorRole.loraA: random("d/A", [4, 64]), TensorRole.loraB: random("d/B", [256, 4]),
                                           TensorRole.magnitude: random("d/m", [256], around: 1)])
        let biased = AdapterModule(target: "lm_head", change: .lowRank(LowRankModule(layout: .linear, rank: 2, scale: 1)),
                                   tensors: [TensorRole.loraA: random("b/A", [2, 64]), TensorRole.loraB: random("b/B", [256, 2]),
                                             TensorRole.loraBBias: random("b/bias", [256])])
        let adapters = try AdapterSet(adapters: [Adapter(name: "dora", kind: .lora, modules: [dora]),
                                                 Adapter(name: "biased", kind: .lora, modules: [biased])], model: model) { tensors[$0]! }
        let ids = [[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]]
        let whole = try model.forward(inputIds: ids, adapters: adapters)
        #expect(RuntimeFixtures.relativeError(whole, try model.forward(inputIds: ids)) > 1e-3, "the updates move the logits")
        guard case .tiles(let deferred) = try model.forwardToHead(inputIds: ids, adapters: adapters, progress: nil, observeLayer: nil) else {
            Issue.record("a causal LM defers its head")
            return
        }
        let error = RuntimeFixtures.relativeError(try Self.assembled(deferred, step: 37), whole)
        #expect(error <= 1e-6, "\(error)")
    }
}
