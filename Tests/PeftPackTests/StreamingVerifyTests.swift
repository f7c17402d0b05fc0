import Foundation
import Testing
@testable import PeftPack

/// verify on the streaming runtime: bad inputs refused before the first pass, progress per layer,
/// and the memory plan's parts.
@Suite("Streaming verify")
struct StreamingVerifyTests {
    static let base = Fixtures.path("models/llama-tiny-bf16")

    /// A copy of the sharded bf16 base whose third shard lost its last 100 bytes.
    static func truncatedCopy() throws -> String {
        let folder = Fixtures.temporaryDirectory() + "/truncated"
        try FileManager.default.copyItem(atPath: base, toPath: folder)
        let shard = folder + "/model-00003-of-00003.safetensors"
        let bytes = try Data(contentsOf: URL(fileURLWithPath: shard))
        try bytes.dropLast(100).write(to: URL(fileURLWithPath: shard))
        return folder
    }

    static func run(merged: String, shape: (batch: Int, tokens: Int) = (2, 8),
                    progress: @escaping (VerifyProgress) -> Void = { _ in }) throws -> Verify.Report {
        try Verify.run(pack: try PipelineVerifyTests.pack("llama_bf16_lora"), base: base, adapterNames: [], targets: [.merged(folder: merged)],
                       inputShape: shape, seed: 0, progress: progress)
    }

    @Test("a truncated shard of the merged model is refused before any pass starts")
    func truncatedMergedShardBeforeAnyPass() throws {
        let merged = try Self.truncatedCopy()
        var events: [VerifyProgress] = []
        #expect {
            _ = try Self.run(merged: merged) { events.append($0) }
        } throws: { error in
            "\(error)".contains("model-00003-of-00003.safetensors: tensors need")
        }
        #expect(events.isEmpty)
    }

    /// Against a bf16 merged model: the weight comparison counts its tensors (6 changed by the
    /// LoRA), then three passes (the adapters, the correctly rounded merge that gives the bound,
    /// the merged model) each report their start and every layer.
    @Test("progress: the weights tensor by tensor, every pass layer 0 to n")
    func progressPerLayer() throws {
        var events: [VerifyProgress] = []
        let report = try Self.run(merged: Fixtures.path("cases/llama_bf16_lora/merged")) { events.append($0) }
        #expect(report.passed)
        let layers = try ModelConfig.load(contentsOf: URL(fileURLWithPath: Self.base + "/config.json")).numLayers
        let weights = events.prefix { $0.pass == "merged weights" }
        #expect(weights.map(\.layer) == Array(0...6) && weights.allSatisfy { $0.unit == "tensors" && $0.tokens == 0 && $0.layers == 6 })
        let passes = events.dropFirst(weights.count)
        #expect(passes.map(\.pass) == ["adapters", "rounded merge", "merged"].flatMap { Array(repeating: $0, count: layers + 1) })
        #expect(passes.map(\.layer) == Array(repeating: Array(0...layers), count: 3).flatMap { $0 })
        #expect(passes.allSatisfy { $0.tokens == 16 && $0.layers == layers && $0.unit == "layers" })
    }

    /// The plan's parts on llama-tiny-bf16 (vocabulary 256, largest tensor the 256 × 64 head),
    /// and a refusal that names the size exactly when the total exceeds what is available.
    @Test("the memory plan: parts, and a refusal beyond what is available")
    func memoryPlan() throws {
        let model = try Verify.loadModel(Self.base).0
        let memory = VerifyMemory(model: model, adapters: nil, batch: 2, tokens: 8, passes: 3, keepingLayers: true)
        #expect(memory.weights == 8 * 256 * 64, "one fp32 buffer of the largest tensor, with its stored bytes")
        #expect(memory.outputs == 3 * 16 * (256 + 2 * 64) * 4, "three passes' logits and two layers' hidden states")
        #expect(memory.activations == model.activationBytes(batch: 2, tokens: 8, positions: 8))
        let rounding = VerifyMemory(model: model, adapters: nil, batch: 2, tokens: 8, passes: 3, keepingLayers: true, roundingMerge: true)
        #expect(rounding.weights == (8 + 24) * 256 * 64, "and the rounded merge's fp64 workspace of that tensor")
        try memory.check(batch: 2, tokens: 8, available: Int(memory.total))
        #expect {
            try memory.check(batch: 2, tokens: 8, available: Int(memory.total) - 1)
        } throws: { error in
            "\(error)".contains("a batch of 2 × 8 tokens needs about") && "\(error)".contains("GB of memory is available")
        }
        let widened = try TransformerModel.load(config: model.config, weights: try Checkpoint(path: Self.base), residency: .widenedAtLoad)
        #expect(VerifyMemory(model: widened, adapters: nil, batch: 2, tokens: 8, passes: 3, keepingLayers: true).weights == 0)
    }

    /// PEFT's merged bf16 model with layer 1's down_proj scaled by 1.05 (rounded back to bf16): the
    /// comparison fails and names layer 1, where the hidden states first part by more than 4× the
    /// correct rounding's difference there. PEFT's own merge (the control) passes with none named.
    @Test("the first layer whose hidden states diverge is named")
    func firstDivergentLayer() throws {
        let original = Fixtures.path("cases/llama_bf16_lora/merged")
        let clean = try Self.run(merged: original).comparisons[0]
        #expect(clean.passed && clean.firstDivergentLayer == nil)
        #expect(clean.layerErrors?.count == 2)

        let folder = Fixtures.temporaryDirectory() + "/perturbed"
        try FileManager.default.copyItem(atPath: original, toPath: folder)
        let checkpoint = try Checkpoint(path: folder)
        var tensors: [String: HostTensor] = [:]
        for name in checkpoint.names { tensors[name] = try checkpoint.tensor(name) as HostTensor }
        let target = "model.layers.1.mlp.down_proj.weight"
        let weight = try #require(tensors[target])
        tensors[target] = HostTensor(floats: weight.floats().map { $0 * 1.05 }, shape: weight.shape, dtype: weight.dtype)
        try FileManager.default.removeItem(atPath: folder + "/model.safetensors")
        try SafetensorsWriter.write(tensors, metadata: ["format": "pt"], to: folder + "/model.safetensors")
        let perturbed = try Self.run(merged: folder).comparisons[0]
        #expect(!perturbed.passed)
        #expect(perturbed.firstDivergentLayer == 1, "layer errors \(perturbed.layerErrors ?? [])")
    }

    /// The statistics accumulated over blocks of 37 vocabulary columns against `Verify.compare`
    /// on the whole tensors: transformers' logits of llama_lora with and without the adapter
    /// (max/mean errors and top-1 exact up to summation order, KL within 1e-15, the fp64
    /// rounding of a difference of log-sum-exps of magnitude ~5).
    @Test("logit statistics over column blocks equal the whole-tensor comparison")
    func statisticsOverBlocks() throws {
        let reference = try RuntimeFixtures.reference(case: "llama_lora")
        let (ours, expected) = (reference.outputBase, reference.outputAdapter)
        let whole = try Verify.compare(ours, expected, label: "whole", logits: true, tolerance: .fp32)
        let vocabulary = ours.shape.last!, rows = ours.values.count / vocabulary
        var statistics = LogitStatistics(rows: rows)
        func block(_ tensor: FloatTensor, _ columns: Range<Int>) -> TokenMatrix {
            TokenMatrix(rows: rows, cols: columns.count, values: (0..<rows).flatMap { tensor.values[($0 * vocabulary + columns.lowerBound)..<($0 * vocabulary + columns.upperBound)] })
        }
        for start in stride(from: 0, to: vocabulary, by: 37) {
            let columns = start..<min(start + 37, vocabulary)
            statistics.add(ours: block(ours, columns), expected: block(expected, columns), rounded: block(expected, columns), columns: columns)
        }
        #expect(statistics.maxAbs == whole.maxAbsError)
        #expect(abs(statistics.sumAbs / Double(statistics.count) - whole.meanAbsError) <= 1e-12 * whole.meanAbsError)
        #expect(statistics.scale == whole.referenceScale)
        #expect(statistics.boundMaxAbs == whole.maxAbsError, "the rounded side given as the expected one")
        #expect(statistics.top1 == whole.top1Agreement)
        let kl = try #require(whole.klDivergence)
        #expect(kl > 1e-6 && abs(statistics.klDivergence - kl) <= 1e-15, "\(statistics.klDivergence) vs \(kl)")
    }

    /// verify --merged with every pass's logits left to vocabulary tiles (the bound set to 0
    /// bytes) reports what the whole-logits run reports (errors exact: the same products).
    @Test("verify over vocabulary tiles reports what whole logits report")
    func verifyOverTiles() throws {
        let merged = Fixtures.path("cases/llama_bf16_lora/merged")
        let pack = try PipelineVerifyTests.pack("llama_bf16_lora")
        func run(_ bytes: Int) throws -> Verify.Comparison {
            try Verify.run(pack: pack, base: Self.base, adapterNames: [], targets: [.merged(folder: merged)],
                           inputShape: (2, 8), seed: 3, fullLogitsBytes: bytes).comparisons[0]
        }
        let (whole, tiled) = (try run(Verify.fullLogitsBytes), try run(0))
        #expect(whole.passed && tiled.passed)
        #expect(tiled.maxAbsError == whole.maxAbsError && tiled.referenceScale == whole.referenceScale)
        #expect(tiled.rounding?.bound == whole.rounding?.bound && tiled.top1Agreement == whole.top1Agreement)
        // KL is a difference of log-sum-exps of magnitude ~5 taken in fp64: the two sums' orders
        // differ by about one ulp of those, ~1e-15 absolute.
        #expect(abs(tiled.klDivergence! - whole.klDivergence!) <= 1e-15)
        #expect(tiled.firstDivergentLayer == nil && tiled.layerErrors == whole.layerErrors)
    }
}
