/// A whole tensor that replaces a base tensor, is added to it, or replaces some of its rows
/// (spec/FORMAT.md §9.10). Adapters of every kind carry these.
public struct WholeTensorModule: Sendable, Equatable {
    public enum Effect: Sendable, Equatable {
        case replace
        case delta
        /// Rows of the base tensor (an embedding or output head, one row per token) that become
        /// the stored tensor's rows, in order: PEFT's `trainable_token_indices`.
        case rows([Int])
    }

    public var effect: Effect
    /// The tensor's exact name in the source file (e.g. PEFT's `…embed_tokens.base_layer.weight`),
    /// so an exporter restores it unchanged.
    public var sourceName: String?

    public init(_ effect: Effect, sourceName: String? = nil) {
        self.effect = effect
        self.sourceName = sourceName
    }

    /// The serialized name of the effect.
    public var mode: FullTensorMode {
        switch effect {
        case .replace: .replace
        case .delta: .delta
        case .rows: .rows
        }
    }
}

/// The serialized `mode` of a whole-tensor module.
public enum FullTensorMode: String, Codable, Sendable {
    case replace
    case delta
    case rows
}

extension WholeTensorModule {
    /// Adapters of kind `full` are whole tensors only, which mlx-lm's full fine-tune holds and no
    /// PEFT adapter type does; other kinds' whole-tensor modules merge and export with them.
    /// Whole tensors stack with the adapter that carries them.
    public static let rules = KindRules(
        requiredRoles: [TensorRole.fullValue], optionalRoles: [],
        mergeable: true, addedComputation: nil, stackable: false, exports: [.mlx])
}

// MARK: Run time

/// Rows of an embedding or output head are replaced in place: PEFT's `trainable_token_indices`
/// (TrainableTokensLayer `get_merged_weights`, an `index_copy` of the stored rows).
extension AdapterSet {
    /// `adds`: the stored tensor is a delta added to the target rather than its replacement.
    mutating func addFullTensor(_ module: AdapterModule, adds: Bool, _ source: AdapterTensors) throws {
        try source.checkRoles(of: module)
        guard let id = model.parameter(named: module.target) else {
            throw RuntimeError.unknownTarget(adapter: source.adapter, target: module.target)
        }
        let value = try source.require(TensorRole.fullValue, of: module)
        try source.check(value, model.parameters.shapes[id])
        overrides[id] = adds ? zip(try currentValue(id), value.values).map { $0 + $1 } : value.values
    }

    /// On a model with a tied head, PEFT ties a TrainableTokens wrapper on the head to the one on
    /// the input embedding, so the head's rows change with it; it saves nothing for the head. A
    /// head that has rows of its own in the same adapter (PEFT does that when the indices
    /// differ) keeps the original embedding apart from those.
    mutating func addRows(_ module: AdapterModule, rows: [Int], of adapter: Adapter, _ source: AdapterTensors) throws {
        try source.checkRoles(of: module)
        guard let id = model.parameter(named: module.target) else {
            throw RuntimeError.unknownTarget(adapter: source.adapter, target: module.target)
        }
        let shape = model.parameters.shapes[id]
        guard shape.count == 2 else { throw source.fail("module \(module.target) replaces rows of a \(shape.count)-D tensor") }
        let value = try source.require(TensorRole.fullValue, of: module)
        try source.check(value, [rows.count, shape[1]])
        if let bad = rows.first(where: { $0 < 0 || $0 >= shape[0] }) {
            throw source.fail("module \(module.target) replaces row \(bad), outside its \(shape[0]) rows")
        }
        overrides[id] = Self.replacingRows(try currentValue(id), width: shape[1], rows: rows, with: value.values)

        guard let tie = model.tiedHead, tie.embedding == id else { return }
        let headHasOwnRows = adapter.modules.contains { $0.replacedRows != nil && model.parameter(named: $0.target) == tie.head }
        if !headHasOwnRows {
            overrides[tie.head] = Self.replacingRows(try currentValue(tie.head), width: shape[1], rows: rows, with: value.values)
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

// MARK: Merge

extension MergeArithmetic {
    /// Weight w moves the tensor w of the way to the replacement (w = 1: the replacement).
    static func replace(_ target: inout [Double], with replacement: [Double], weight: Double) {
        if weight == 1 {
            target = replacement
        } else {
            for index in target.indices { target[index] += weight * (replacement[index] - target[index]) }
        }
    }

    /// Weight w moves each replaced row w of the way to its new value, as for whole tensors.
    static func replaceRows(_ target: inout [Double], width: Int, rows: [Int], with replacement: [Double], weight: Double) {
        for (position, row) in rows.enumerated() {
            for column in 0..<width {
                let index = row * width + column, new = replacement[position * width + column]
                target[index] = weight == 1 ? new : target[index] + weight * (new - target[index])
            }
        }
    }
}
