/// Which tensors of a checkpoint are embedding tables, the output head and buffers, as extract and
/// inspect need to know: the base's architecture says it. For a family not in the registry the
/// tensor names alone decide, from the names transformers uses across families (the fallback
/// below), and a buffer is what any registered family calls one (position ids, rotary frequencies,
/// GPT-style causal masks are buffers in every family that has them).
struct TensorClasses {
    let architecture: Architecture?

    init(modelType: String?, className: String?) {
        architecture = ArchitectureRegistry.architecture(modelType: modelType, className: className)
    }

    init(identity: BaseModelIdentity) {
        self.init(modelType: identity.modelType, className: identity.architecture)
    }

    /// A non-parameter tensor the model recomputes (transformers does not load it).
    func isBuffer(_ name: String) -> Bool {
        if let architecture { return architecture.isBuffer(name) }
        return ArchitectureRegistry.all.contains { $0.isBuffer(name) }
    }

    /// A token, position or token-type table: stored [rows, dim] and read by row.
    func isEmbeddingTable(_ name: String) -> Bool {
        guard let architecture else { return Fallback.hasComponent(name, in: Fallback.embeddingTables) }
        guard let path = Self.modulePath(name) else { return false }
        let tables = [architecture.tokenEmbedding] + architecture.otherEmbeddings
        return tables.contains { path == $0 || path == "\(architecture.checkpointPrefix).\($0)" || path == "base_model.model.\(architecture.checkpointPrefix).\($0)" }
    }

    /// The output head of the causal LM class.
    func isOutputHead(_ name: String) -> Bool {
        guard let architecture else { return Fallback.hasComponent(name, in: Fallback.outputHeads) }
        guard let head = architecture.outputHead, let path = Self.modulePath(name) else { return false }
        return path == head || path == "base_model.model.\(head)"
    }

    /// An embedding table or the head: low rank would lose most of either.
    func isEmbedding(_ name: String) -> Bool {
        isEmbeddingTable(name) || isOutputHead(name)
    }

    /// The checkpoint names the output head's weight may have.
    var outputHeadWeights: [String] {
        guard let architecture else { return Fallback.outputHeads.map { $0 + ".weight" } }
        return architecture.outputHead.map { [$0 + ".weight"] } ?? []
    }

    /// The module path of a parameter's tensor name (`…​.weight` or `…​.bias`), nil for other names.
    private static func modulePath(_ name: String) -> String? {
        for suffix in [".weight", ".bias"] where name.hasSuffix(suffix) { return String(name.dropLast(suffix.count)) }
        return nil
    }

    /// Module names transformers gives embeddings and heads across families (OPT's embed_positions,
    /// T5's shared, GPT-NeoX's embed_out included), for bases of families peftpack does not know.
    private enum Fallback {
        static let embeddingTables = ["embed_tokens", "wte", "wpe", "word_embeddings", "position_embeddings", "token_type_embeddings",
                                      "embed_positions", "shared"]
        static let outputHeads = ["lm_head", "embed_out"]

        static func hasComponent(_ name: String, in modules: [String]) -> Bool {
            name.split(separator: ".").contains { modules.contains(String($0)) }
        }
    }
}
