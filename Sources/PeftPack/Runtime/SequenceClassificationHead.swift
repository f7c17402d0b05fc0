/// transformers' `*ForSequenceClassification` heads, which give one row of `num_labels` logits per
/// sequence: BertForSequenceClassification applies `classifier` to the pooler output
/// (tanh(pooler.dense(hidden state of the first token))); the decoders (Llama family, GPT-2)
/// apply `score` (no bias) to every position and keep the last token that is not `pad_token_id`
/// (`GenericForSequenceClassification`: the rightmost non-pad position, the first position when a
/// row is all padding). PEFT's SEQ_CLS adapters train the head as a modules_to_save copy.
struct SequenceClassificationHead: Sendable {
    enum Pooling: Sendable {
        case firstTokenPooler(dense: Int)
        case lastNonPadToken(padTokenId: Int?)
    }

    let pooling: Pooling
    /// The linear layer that gives the logits (`classifier` or `score`).
    let classifier: Int
    let labels: Int

    static func bert(labels: Int, pooler: Int?, builder: inout ModelBuilder, hidden: Int) throws -> Self {
        guard let pooler else {
            throw RuntimeError.missingWeight(name: "pooler.dense.weight (BertForSequenceClassification classifies the pooler output)",
                                             expectedShape: [hidden, hidden])
        }
        let classifier = try builder.linear("classifier", in: hidden, out: labels, bias: true, prefixed: false)
        return Self(pooling: .firstTokenPooler(dense: pooler), classifier: classifier, labels: labels)
    }

    static func decoder(labels: Int, padTokenId: Int?, builder: inout ModelBuilder, hidden: Int) throws -> Self {
        let score = try builder.linear("score", in: hidden, out: labels, bias: false, prefixed: false)
        return Self(pooling: .lastNonPadToken(padTokenId: padTokenId), classifier: score, labels: labels)
    }
}

extension ModelConfig {
    /// The number of labels when the config's architecture is a sequence classifier.
    var sequenceClassificationLabels: Int? {
        architecture?.hasSuffix("ForSequenceClassification") == true ? numLabels : nil
    }
}

extension ForwardPass {
    /// The logits of a sequence-classification head over the body's final hidden states `x`.
    func classify(_ head: SequenceClassificationHead, hidden x: TokenMatrix, inputIds: [[Int]]) -> FloatTensor {
        switch head.pooling {
        case .firstTokenPooler(let dense):
            var pooled = linear(dense, rowsOf(x, (0..<batch).map { $0 * rowsPerItem }))
            ActivationFunction.tanh.apply(&pooled)
            return FloatTensor(shape: [batch, head.labels], values: linear(head.classifier, pooled).values)
        case .lastNonPadToken(let pad):
            let logits = linear(head.classifier, x)
            let rows = inputIds.enumerated().map { item, ids in
                item * rowsPerItem + Self.lastNonPadPosition(ids, pad: pad, promptLength: promptLength)
            }
            return FloatTensor(shape: [batch, head.labels], values: rowsOf(logits, rows).values)
        }
    }

    /// The row transformers picks within one item. With virtual prompt tokens PEFT passes
    /// `inputs_embeds`, so transformers takes the last position.
    static func lastNonPadPosition(_ ids: [Int], pad: Int?, promptLength: Int) -> Int {
        guard let pad, promptLength == 0 else { return promptLength + ids.count - 1 }
        return ids.lastIndex { $0 != pad } ?? 0
    }

    private func rowsOf(_ x: TokenMatrix, _ rows: [Int]) -> TokenMatrix {
        var out = TokenMatrix(rows: rows.count, cols: x.cols)
        for (position, row) in rows.enumerated() {
            out.values.replaceSubrange((position * x.cols)..<((position + 1) * x.cols),
                                       with: x.values[(row * x.cols)..<((row + 1) * x.cols)])
        }
        return out
    }
}

extension TransformerModel {
    var sequenceClassifier: SequenceClassificationHead? { body.classifier }

    /// Whether forward returns logits (over the vocabulary or the labels) rather than hidden states.
    public var outputsLogits: Bool {
        config.family.outputHead != nil || sequenceClassifier != nil
    }

    /// transformers refuses to classify a batch of several sequences without a pad token.
    func checkClassificationBatch(_ batch: Int) throws {
        guard let head = sequenceClassifier, case .lastNonPadToken(nil) = head.pooling, batch > 1 else { return }
        throw RuntimeError.invalidInput("\(config.architecture ?? "the model") has no pad_token_id in config.json, without which transformers cannot pick the last token of a batch of \(batch) sequences; use a batch of 1")
    }
}
