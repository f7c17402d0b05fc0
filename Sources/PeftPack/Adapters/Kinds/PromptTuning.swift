/// Prompt tuning / P-tuning: virtual token embeddings prepended to the input (spec/FORMAT.md
/// §9.9); one module, `ModuleChange.prompt`.
public enum PromptTuning {
    /// embeddings: [tokens, hidden].
    public static let rules = KindRules(
        requiredRoles: [TensorRole.promptEmbeddings], optionalRoles: [],
        mergeable: false, addedComputation: "virtual input tokens", stackable: true, exports: [.peft])
}

// MARK: Run time (not mergeable: it adds tokens)

extension AdapterSet {
    mutating func addPrompt(_ module: AdapterModule, settings: AdapterSettings, _ source: AdapterTensors) throws {
        try source.checkRoles(of: module)
        let hidden = model.config.hiddenSize
        let embeddings = try source.require(TensorRole.promptEmbeddings, of: module)
        guard let tokens = embeddings.shape.first, tokens > 0 else {
            throw source.fail("tensor \(embeddings.name) has no virtual tokens")
        }
        if let declared = settings.numVirtualTokens, declared != tokens {
            throw source.fail("prompt declares \(declared) virtual tokens but \(embeddings.name) has \(tokens)")
        }
        try source.check(embeddings, [tokens, hidden])
        var prompt = self.prompt ?? TokenMatrix(rows: 0, cols: hidden)
        prompt.values += embeddings.values
        prompt.rows += tokens
        self.prompt = prompt
    }
}
