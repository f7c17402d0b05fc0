/// mlx-lm computes a tied model's head as `embed_tokens.as_linear`, and LoRAEmbedding.as_linear
/// adds the embedding's LoRA there too: x·(E + scale·a·b)ᵀ. PEFT's tied head keeps the base
/// weight unless the adapter changes the head as well (with `ensure_weight_tying` PEFT saves the
/// head's factors as the embedding's, transposed). So on a tied base an embedding LoRA is written
/// only when the pack changes the head by the very same factors, which the one LoRAEmbedding then
/// carries; an untied base has its own lm_head Linear for mlx-lm to adapt.
enum MLXTiedHead {
    static func fold(_ modules: inout [MLXExporter.ExportedModule], adapter: Adapter, base: BaseModelIdentity,
                     family: Architecture, file: String) throws {
        let embeddingPath = "\(family.checkpointPrefix).\(family.tokenEmbedding)"
        let embedding = modules.firstIndex { $0.position == .root(embeddingPath) }
        let head = family.outputHead.flatMap { path in modules.firstIndex { $0.position == .root(path) } }
        guard embedding != nil || head != nil else { return }
        guard let tied = base.tieWordEmbeddings else {
            throw InputError(file: file, problem: "records no tie_word_embeddings of its base (a pack older than format 1.2), which decides what mlx-lm's head does with an embedding or head LoRA; import the adapter again with its base", kind: .baseNotRecorded)
        }
        guard tied else { return }
        let name = "adapter \(adapter.name)"
        switch (embedding, head) {
        case let (e?, h?):
            guard sameChange(embedding: modules[e], head: modules[h]) else {
                throw InputError(file: file, problem: "\(name) changes the tied embedding and head of its base differently, but mlx-lm's tied head is embed_tokens.as_linear, which carries the embedding's LoRA; merge it instead (peftpack merge)", kind: .notExpressible)
            }
            modules.remove(at: h)
        case (_?, nil):
            throw InputError(file: file, problem: "\(name) changes the embedding of a tied base and not its head, but mlx-lm's tied head is embed_tokens.as_linear, which would add the change to the head too; merge it instead (peftpack merge)", kind: .notExpressible)
        case (nil, _?):
            throw InputError(file: file, problem: "\(name) adapts the head of a tied base, which mlx-lm computes as embed_tokens.as_linear, with no lm_head module to adapt; merge it instead (peftpack merge)", kind: .notExpressible)
        case (nil, nil):
            return
        }
    }

    /// Whether the head's ΔW [vocab, dim] is the embedding's ΔE factor for factor: the head's
    /// A [r, dim] is the embedding's Bᵀ and its B [vocab, r] the embedding's Aᵀ, at one rank and scale.
    static func sameChange(embedding e: MLXExporter.ExportedModule, head h: MLXExporter.ExportedModule) -> Bool {
        guard e.rank == h.rank, e.scale == h.scale, h.inputs == e.out, h.out == e.inputs, h.magnitude == nil else { return false }
        let rank = e.rank, vocabulary = e.inputs, dim = e.out
        for j in 0..<rank {
            for d in 0..<dim where h.a[j * dim + d] != e.b[d * rank + j] { return false }
            for v in 0..<vocabulary where h.b[v * rank + j] != e.a[j * vocabulary + v] { return false }
        }
        return true
    }
}
