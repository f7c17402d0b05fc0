/// What convert_hf_to_gguf.py did to a tensor's values on the way into the file, and its inverse:
/// reading applies `toCheckpoint`, writing a changed tensor back (`GGUFBaseModel.storedOrder`)
/// applies `toStored`. The one place these rules live.
enum GGUFValueTransform: Equatable {
    case none
    /// LlamaModel.permute on q_proj/k_proj output rows, with this head count: within each head,
    /// rows (half, j) become (j, half) so rotary pairs sit side by side. A permutation: exact
    /// both ways.
    case permutedRows(heads: Int)
    /// Gemma's norm weights, stored as w + 1 (GemmaModel/Gemma2Model.modify_tensors, for the
    /// (1 + w) RMSNorm of transformers). Not exact both ways in fp32: the converter rounds w + 1,
    /// so stored − 1 reads back w only to fp32 rounding near 1, as torch's `weight - 1` would.
    /// The runtime then computes 1 + (stored − 1), which is `stored` bit for bit whenever stored
    /// lies in [0.5, 2] (Sterbenz), i.e. llama.cpp's scale. LoRA never merges into a norm, so
    /// only reading needs to be exact.
    case plusOne

    /// Whether each element maps to itself, so a range of the tensor reads alone.
    var isElementwise: Bool {
        switch self {
        case .none, .plusOne: true
        case .permutedRows: false
        }
    }

    /// Stored values → the checkpoint's, in place over the whole tensor (`rows` is shape[0]).
    func toCheckpoint(_ values: inout [Float], rows: Int) {
        switch self {
        case .none: return
        case .permutedRows(let heads): values = Self.permuteRows(values, rows: rows, heads: heads, inverse: true)
        case .plusOne: values.withUnsafeMutableBufferPointer { Self.subtractOne($0) }
        }
    }

    /// Stored values of an elementwise transform → the checkpoint's, on a range read alone.
    func toCheckpoint(_ values: UnsafeMutableBufferPointer<Float>) {
        precondition(isElementwise)
        if self == .plusOne { Self.subtractOne(values) }
    }

    /// Checkpoint values → the ones the converter stores.
    func toStored(_ values: [Float], rows: Int) -> [Float] {
        switch self {
        case .none: values
        case .permutedRows(let heads): Self.permuteRows(values, rows: rows, heads: heads, inverse: false)
        case .plusOne: values.map { $0 + 1 }
        }
    }

    private static func subtractOne(_ values: UnsafeMutableBufferPointer<Float>) {
        for index in values.indices { values[index] -= 1 }
    }

    private static func permuteRows(_ values: [Float], rows: Int, heads: Int, inverse: Bool) -> [Float] {
        GGUFLoRA.permuteRows(values, rows: rows, columns: values.count / rows, heads: heads, inverse: inverse)
    }
}
