extension TransformerModel {
    /// The token embedding and the head that shares its storage, for decoders whose config ties
    /// them.
    var tiedHead: (embedding: ParameterID, head: ParameterID)? {
        guard config.tieWordEmbeddings, sequenceClassifier == nil else { return nil }
        switch body {
        case .llama(let llama): return (embeddings[llama.embedding].weight, linears[llama.head].weight)
        case .gpt2(let gpt2): return (embeddings[gpt2.tokenEmbedding].weight, linears[gpt2.head].weight)
        case .bert: return nil
        }
    }
}
