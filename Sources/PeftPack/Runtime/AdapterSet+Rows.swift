/// Rows of an embedding or output head replaced in place: PEFT's `trainable_token_indices`
/// (TrainableTokensLayer `get_merged_weights`, an `index_copy` of the stored rows).
extension AdapterSet {
    /// On a model with a tied head, PEFT ties a TrainableTokens wrapper on the head to the one on
    /// the input embedding, so the head's rows change with it; it saves nothing for the head. A
    /// head that has rows of its own in the same adapter (PEFT does that when the indices
    /// differ) keeps the original embedding apart from those.
    mutating func addRows(_ module: AdapterModule, of adapter: Adapter, _ source: AdapterTensors) throws {
        try source.allowOnly([TensorRole.fullValue], in: module)
        guard let id = model.parameter(named: module.target) else {
            throw RuntimeError.unknownTarget(adapter: source.adapter, target: module.target)
        }
        guard let rows = module.rows else { throw source.fail("module \(module.target) replaces rows but lists none") }
        let shape = model.parameters.shapes[id]
        guard shape.count == 2 else { throw source.fail("module \(module.target) replaces rows of a \(shape.count)-D tensor") }
        let value = try source.require(TensorRole.fullValue, of: module)
        try source.check(value, [rows.count, shape[1]])
        if let bad = rows.first(where: { $0 < 0 || $0 >= shape[0] }) {
            throw source.fail("module \(module.target) replaces row \(bad), outside its \(shape[0]) rows")
        }
        overrides[id] = Self.replacingRows(currentValue(id), width: shape[1], rows: rows, with: value.values)

        guard let tie = model.tiedHead, tie.embedding == id else { return }
        let headHasOwnRows = adapter.modules.contains { $0.mode == .rows && model.parameter(named: $0.target) == tie.head }
        if !headHasOwnRows {
            overrides[tie.head] = Self.replacingRows(currentValue(tie.head), width: shape[1], rows: rows, with: value.values)
        }
    }

    static func replacingRows(_ values: [Float], width: Int, rows: [Int], with replacement: [Float]) -> [Float] {
        var out = values
        for (position, row) in rows.enumerated() {
            out.replaceSubrange((row * width)..<((row + 1) * width), with: replacement[(position * width)..<((position + 1) * width)])
        }
        return out
    }
}

extension TransformerModel {
    /// The token embedding and the head that shares its storage, for decoders whose config ties
    /// them.
    var tiedHead: (embedding: ParameterID, head: ParameterID)? {
        guard config.tieWordEmbeddings, let pair = body.embeddingAndHead else { return nil }
        return (embeddings[pair.embedding].weight, linears[pair.head].weight)
    }
}
