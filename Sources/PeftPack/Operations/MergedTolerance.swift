import Foundation

/// How far a correct merge stored in a narrow dtype must be from the adapter applied in fp32.
///
/// A merged bf16 model cannot reproduce the adapter exactly: every merged weight is rounded to
/// 8 significant bits, and those roundings reach the output (about 0.01-0.02 max abs on the
/// fixtures' logits of magnitude ~3), far above fp32 tolerances. The floor depends on the model,
/// the adapter and the input, so it is measured on the same input: the base's exact merge with the
/// pack's adapters, each tensor rounded once (to nearest, ties to even) to the dtype the merged
/// checkpoint stores it in, is run and compared with the adapter applied in fp32. A merge is
/// then accepted up to `multiple` times that bound (plus the fp32 tolerance). Measured with
/// fixtures/data/numbers (llama-tiny-bf16 + its LoRA, 5 seeds of 4×32 tokens, bound 0.018-0.025):
/// PEFT's merge 1.0×; the exact merge truncated to bf16 instead of rounded (errors up to 1 ulp,
/// twice a correct rounding's, as a merge that rounds twice may reach) 1.0-2.0×; PEFT merges at
/// adapter weight 0.98 or 1.02 4.5-8.5×, at 0.95 12-19×. So 4 passes any merge within one ulp
/// per weight and fails a weight off by 2%.
public struct MergedRoundingBound: Encodable, Sendable {
    /// The narrowest floating-point dtype of the merged checkpoint ("BF16", "F16").
    public var dtype: String
    /// Max abs deviation of the correctly rounded merge's output from the adapter's.
    public var bound: Double
    public var multiple: Double
    /// The comparison's max abs error over `bound`.
    public var ratio: Double
}

enum MergedTolerance {
    static let multiple = 4.0

    /// The narrowest float dtype among a merged checkpoint's tensors when it is narrower than
    /// fp32 (only then does rounding the merge cost more than fp32 summation order).
    static func narrowDType(of checkpoint: Checkpoint) -> DType? {
        let floats = Set(checkpoint.infos.map(\.dtype).filter(\.isFloatingPoint))
        return [DType.bf16, .f16].first(where: floats.contains)
    }

    /// What the merged model's rounding is named by in the report: its quantized types (a
    /// requantized merge: Q4_K, nf4…) and its narrow float dtype, or nil when it holds only fp32
    /// and wider values (then no bound is needed).
    static func roundingLabel(of checkpoint: Checkpoint) -> String? {
        let quantized = Set(checkpoint.names.compactMap(checkpoint.quantizedTypeName)).sorted()
        let parts = quantized + (narrowDType(of: checkpoint).map { [$0.rawValue] } ?? [])
        return parts.isEmpty ? nil : parts.joined(separator: "+")
    }

    /// The correct merge of the pack's adapters (those named) into `base`, as checkpoint weights
    /// with each tensor in the dtype `merged` stores it in. Nil when an adapter adds computation no
    /// merge can hold (prefix, prompt, bottleneck): the "bound" would then be that adapter's whole
    /// effect, and no merged model is right.
    static func correctMerge(base baseFolder: String, pack: String, adapterNames: [String], merged: Checkpoint) throws -> CorrectMerge? {
        let base = try BaseModel(folder: baseFolder)
        let reader = try PackReader(path: pack)
        let document = try reader.adapterDocument()
        let adapters = document.adapters.filter { adapterNames.contains($0.name) }
        guard !adapters.isEmpty, adapters.allSatisfy(\.kind.rules.mergeable) else { return nil }
        let selected = adapters.map { (adapter: $0, weight: 1.0) }
        var (changes, _) = try MergePlanner.plan(adapters: selected, base: base, skipUnmergeable: false, file: { _ in pack })
        let dtype: (String) -> DType? = { merged.info($0)?.dtype ?? narrowDType(of: merged) }
        var config = try base.checkpoint.modelConfig()
        // On a tied base the correct merge is the untied one, whatever the merged model did:
        // keeping the tie moves the other side too, and a bound taken from that would hide it.
        var tiedOutputs: [String: HostTensor] = [:]
        if let tie = base.tie, let embedding = base.checkpoint.info(tie.embedding),
           let tied = try TiedMerge.plan(changes: changes, base: base, policy: .untie, outputType: dtype(tie.embedding) ?? embedding.dtype,
                                         readers: [reader], owners: selected.map { _ in 0 }, selected: selected) {
            changes = tied.changes
            tiedOutputs = tied.outputs.mapValues(\.result)
            if tied.untie { config.tieWordEmbeddings = false }
        }
        let weights = RoundedMergeWeights(base: base.checkpoint, changes: changes, computed: tiedOutputs, reader: reader,
                                          selected: selected, dtype: dtype, requantizedAs: merged, tie: base.tie)
        return CorrectMerge(weights: weights, config: config)
    }
}

/// The exact merge of a pack's adapters into a base: the reference both for a merged model's
/// weights (`MergedWeights`) and, rounded once per tensor to the merged model's dtypes, for the
/// output a correct merge gives (`MergedRoundingBound`).
struct CorrectMerge {
    let weights: RoundedMergeWeights
    let config: ModelConfig

    /// The correctly rounded merge as a model.
    func roundedModel() throws -> TransformerModel {
        try TransformerModel.load(config: config, weights: weights)
    }
}

/// A base checkpoint seen through a merge: tensors the adapters change are computed in fp64 by
/// merge's own arithmetic and rounded once to the merged checkpoint's dtype; the others are the
/// base's, rounded to that dtype when it differs.
struct RoundedMergeWeights: WeightProvider {
    let base: Checkpoint
    let changes: [String: TensorChange]
    /// Tensors computed whole beforehand: a tied base's head and embedding.
    let computed: [String: HostTensor]
    let reader: PackReader
    let selected: [(adapter: Adapter, weight: Double)]
    let dtype: (String) -> DType?
    /// The merged model: a changed tensor it stores quantized is the exact merge requantized as
    /// it stores it (from fp32, as the quantizers take it), not rounded to a float dtype.
    let requantizedAs: Checkpoint?
    /// A tied base's pair: a head the base does not store is computed from the embedding.
    let tie: EmbeddingTie?
    /// The last changed tensor computed: a pass reads a large tensor in consecutive tiles or
    /// rows (a head, an embedding's looked-up rows), and each would otherwise redo its merge.
    private let lastComputed = LastComputedTensor()

    var names: [String] { base.names + computed.keys.filter { base.info($0) == nil }.sorted() }

    func tensorInfo(_ name: String) throws -> TensorInfo? {
        if let value = computed[name] { return TensorInfo(name: name, dtype: value.dtype, shape: value.shape) }
        guard let stored = base.info(name) else { return nil }
        return TensorInfo(name: name, dtype: target(stored), shape: stored.shape)
    }

    /// Unchanged tensors are read a range at a time from the base (rounded to the merged dtype
    /// element by element, which for fp32 or 16-bit sources is the same single rounding), so a
    /// large head or embedding is never copied whole; changed ones are computed whole.
    func widen(_ name: String, elements range: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) throws {
        guard computed[name] == nil, changes[name] == nil, let stored = base.info(name), stored.dtype != .f64 else {
            let whole = try lastComputed.value(name) {
                guard let tensor = try tensor(name) else { throw RuntimeError.missingWeight(name: name, expectedShape: []) }
                return tensor
            }
            return whole.widen(elements: range, into: destination)
        }
        try base.widen(name, elements: range, into: destination)
        let narrow = target(stored)
        guard narrow != stored.dtype else { return }
        let rounded = HostTensor(floats: Array(destination), shape: [range.count], dtype: narrow)
        rounded.widen(elements: 0..<range.count, into: destination)
    }

    private func target(_ stored: TensorInfo) -> DType {
        stored.dtype.isFloatingPoint ? dtype(stored.name) ?? stored.dtype : stored.dtype
    }

    func tensor(_ name: String) throws -> HostTensor? {
        if let value = computed[name] { return value }
        guard let stored = base.info(name) else { return nil }
        let target = target(stored)
        guard let exact = try exactMerge(name) else {
            if target == stored.dtype { return try base.tensor(name) as HostTensor }
            return HostTensor(correctlyRounding: try base.tensor(name).floats().map(Double.init), shape: stored.shape, dtype: target)
        }
        if let merged = requantizedAs, (merged.quantizedTypeName(name) != nil),
           let values = try merged.decoded?.requantized(name, values: exact.map { Float($0) }) {
            return HostTensor(floats: values, shape: stored.shape, dtype: merged.info(name)?.dtype ?? .f32)
        }
        return HostTensor(correctlyRounding: exact, shape: stored.shape, dtype: target)
    }

    /// The tensors the adapters change, a tied pair computed beforehand included.
    /// With either side of a tied pair changed, both: a merged model that keeps the tie moves the
    /// side no adapter changes, and that is where it shows.
    var changedNames: [String] {
        var names = Set(changes.keys).union(computed.keys)
        if let tie, names.contains(tie.head) || names.contains(tie.embedding) { names.formUnion([tie.head, tie.embedding]) }
        return names.sorted()
    }

    /// The base tensor `name` is computed from: a tied head the base does not store is its
    /// embedding.
    func sourceName(_ name: String) -> String {
        if let tie, name == tie.head, base.info(name) == nil { return tie.embedding }
        return name
    }

    /// A changed tensor's exact merge in fp64, before any rounding (a tied pair's too: each side
    /// from the one stored weight with its own changes, as the untied merge computes them); nil
    /// for a tensor no adapter changes.
    func exactMerge(_ name: String) throws -> [Double]? {
        let source = sourceName(name)
        let pairChanged = tie.map { changes[$0.head] != nil || changes[$0.embedding] != nil } ?? false
        let unchangedSideOfPair = pairChanged && (name == tie?.head || name == tie?.embedding) ? TensorChange() : nil
        guard let change = changes[name] ?? unchangedSideOfPair, let stored = base.info(source) else { return nil }
        var values = try base.tensor(source).floats().map(Double.init)
        for (operation, weight) in change.operations {
            _ = try Merge.apply(operation, weight: weight, to: &values, stored: stored, readers: [reader],
                                owners: selected.map { _ in 0 }, selected: selected)
        }
        return values
    }

    /// The dtype the merged model stores `name` in (the base's when it holds no such tensor).
    func mergedDType(_ name: String) -> DType? { base.info(sourceName(name)).map(target) }
}

/// One computed tensor, kept until another is asked for.
private final class LastComputedTensor: @unchecked Sendable {
    private let lock = NSLock()
    private var last: (name: String, tensor: HostTensor)?

    func value(_ name: String, compute: () throws -> HostTensor) throws -> HostTensor {
        lock.lock()
        defer { lock.unlock() }
        if let last, last.name == name { return last.tensor }
        last = nil
        let tensor = try compute()
        last = (name, tensor)
        return tensor
    }
}
