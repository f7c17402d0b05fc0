extension TransformerModel {
    /// The token embedding and the head that shares its storage, for decoders whose config ties
    /// them.
    var tiedHead: (embedding: ParameterID, head: ParameterID)? {
        guard config.tieWordEmbeddings, let pair = body.embeddingAndHead else { return nil }
        return (embeddings[pair.embedding].weight, linears[pair.head].weight)
    }
}
