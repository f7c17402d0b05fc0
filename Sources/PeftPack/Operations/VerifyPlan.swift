import Foundation

/// Where a verify run is: pass `pass` ("adapters", "merged", "rounded merge", "other pack") has
/// finished `layer` of its `layers` layers over `tokens` tokens; the "merged weights" step counts
/// tensors compared instead (`unit`), with no tokens.
public struct VerifyProgress: Sendable {
    public var pass: String
    public var layer: Int
    public var layers: Int
    public var tokens: Int
    public var unit = "layers"
}

/// A verify target with its inputs opened and checked, ready to compute.
enum PlannedTarget {
    case reference(PlannedReference)
    case merged(PlannedMerged)
    case pack(path: String, adapters: AdapterSet)
}

struct PlannedReference {
    let file: SafetensorsFile
    let key: String
    let rows: [[Int]]
}

/// A merged model folder: every shard's header validated and the model's tensors checked
/// against its config (no values read yet).
struct PlannedMerged {
    let folder: String
    let checkpoint: Checkpoint
    let model: TransformerModel
}

extension Verify.Comparing {
    /// Opens and checks a target's inputs and plans the memory of its passes, so a bad file or
    /// an input that cannot fit fails before any pass starts.
    func plan(_ target: Verify.Target, otherAdapters: (String) throws -> AdapterSet) throws -> PlannedTarget {
        switch target {
        case .reference(let path, let key):
            let reference = try planReference(path, key: key)
            try checkMemory(batch: reference.rows.count, tokens: reference.rows[0].count, passes: 1, keepingLayers: false,
                            roundingMerge: false, logitsKept: true)
            return .reference(reference)
        case .merged(let folder):
            let checkpoint = try Checkpoint(path: folder)
            // A GGUF model's config comes from its metadata, a folder's from its config.json.
            let config = try checkpoint.modelConfig()
            let merged = PlannedMerged(folder: folder, checkpoint: checkpoint,
                                       model: try TransformerModel.load(config: config, weights: checkpoint))
            try checkMemory(batch: random.shape.batch, tokens: random.shape.tokens, passes: 3, keepingLayers: true,
                            roundingMerge: true, logitsKept: !tilesLogits(passes: 3))
            return .merged(merged)
        case .pack(let path):
            let adapters = try otherAdapters(path)
            try checkMemory(batch: random.shape.batch, tokens: random.shape.tokens, passes: 2, keepingLayers: true,
                            roundingMerge: false, logitsKept: !tilesLogits(passes: 2))
            return .pack(path: path, adapters: adapters)
        }
    }

    private func planReference(_ path: String, key: String?) throws -> PlannedReference {
        let file = try SafetensorsFile(path: path)
        guard let ids = file.info("input_ids"), ids.shape.count == 2, ids.dtype == .i64 else {
            throw InputError(file: path, tensor: "input_ids", problem: "a reference needs input_ids as I64 [batch, seq]")
        }
        try model.checkInputShape(batch: ids.shape[0], tokens: ids.shape[1], adapters: adapters)
        let flat = try file.withBytes("input_ids") { raw in
            (0..<(ids.shape[0] * ids.shape[1])).map { Int(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self))) }
        }
        let rows = (0..<ids.shape[0]).map { Array(flat[($0 * ids.shape[1])..<(($0 + 1) * ids.shape[1])]) }
        let outputKey = try key ?? Verify.defaultKey(file)
        guard let expected = file.info(outputKey), expected.dtype.isFloatingPoint else {
            throw InputError(file: path, tensor: outputKey, problem: "no floating-point output of that name")
        }
        return PlannedReference(file: file, key: outputKey, rows: rows)
    }

    /// The input's shape within the runtime's limits (`checkInputShape`), and what a comparison
    /// of `passes` passes holds at its peak within the memory the system has free.
    func checkMemory(batch: Int, tokens: Int, passes: Int, keepingLayers: Bool, roundingMerge: Bool, logitsKept: Bool) throws {
        try model.checkInputShape(batch: batch, tokens: tokens, adapters: adapters, logitsKept: logitsKept)
        guard let available = PhysicalMemory.available else { return }
        try VerifyMemory(model: model, adapters: adapters, batch: batch, tokens: tokens, passes: passes, keepingLayers: keepingLayers,
                         roundingMerge: roundingMerge, logitsKept: logitsKept)
            .check(batch: batch, tokens: tokens, available: available)
    }
}

/// The memory a comparison needs at its peak: one pass's activations and widened weights (the
/// passes run one after another), and the outputs of every pass kept for comparing (logits over
/// the whole vocabulary for a causal LM, or without `logitsKept` its final hidden states and one
/// tile of logits), with each layer's hidden states when `keepingLayers`.
/// With `roundingMerge` the correctly rounded merge computes one changed tensor at a time in
/// fp64 by merge's arithmetic: about 24 bytes per element of the largest tensor (fp64 values,
/// their fp32 widening and rounding, the stored bytes).
struct VerifyMemory {
    var activations: Double
    var weights: Double
    var outputs: Double

    init(model: TransformerModel, adapters: AdapterSet?, batch: Int, tokens: Int, passes: Int, keepingLayers: Bool,
         roundingMerge: Bool = false, logitsKept: Bool = true) {
        (activations, weights) = model.passMemory(batch: batch, tokens: tokens, adapters: adapters, logitsKept: logitsKept)
        if roundingMerge {
            weights += 24 * (model.parameters.shapes.map { Double(Shape.elementCount($0) ?? 0) }.max() ?? 0)
        }
        let rows = Double(batch) * Double(tokens + (adapters?.promptLength ?? 0))
        let config = model.config
        let width = model.sequenceClassifier?.labels ?? (config.family.outputHead == nil ? config.hiddenSize : config.vocabSize)
        let layerStates = Double(keepingLayers ? config.numLayers * config.hiddenSize : 0)
        let kept = logitsKept ? rows * Double(width) : rows * Double(config.hiddenSize) + rows * Double(Verify.logitColumns(rows: Int(rows)))
        outputs = Double(passes) * (kept + rows * layerStates) * 4
    }

    var total: Double { activations + weights + outputs }

    func check(batch: Int, tokens: Int, available: Int) throws {
        guard total > Double(available) else { return }
        throw RuntimeError.invalidInput(String(
            format: "a batch of %d × %d tokens needs about %.2f GB (activations %.2f, widened weights %.2f, outputs %.2f) but %.2f GB of memory is available; use a smaller shape",
            batch, tokens, total / 1e9, activations / 1e9, weights / 1e9, outputs / 1e9, Double(available) / 1e9))
    }
}
