extension Architecture {
    /// BertModel and its task classes: a post-LayerNorm encoder over word, position and
    /// token-type embeddings. Old checkpoints name LayerNorm parameters gamma/beta.
    static let bert = Architecture(
        modelType: "bert", classNames: ["BertModel", "BertForSequenceClassification", "BertForMaskedLM", "BertForPreTraining"],
        checkpointPrefix: "bert", layerPath: "encoder.layer",
        layerModules: [
            LayerModule("attention.self.query"), LayerModule("attention.self.key"), LayerModule("attention.self.value"),
            LayerModule("attention.output.dense"), LayerModule("intermediate.dense"), LayerModule("output.dense"),
        ],
        tokenEmbedding: "embeddings.word_embeddings",
        otherEmbeddings: ["embeddings.position_embeddings", "embeddings.token_type_embeddings"], outputHead: nil,
        layerNorms: ["attention.output.LayerNorm", "output.LayerNorm"], modelNorms: ["embeddings.LayerNorm"],
        buffers: ["embeddings.position_ids", "embeddings.token_type_ids"],
        tiesEmbeddingsByDefault: true,
        configDefaults: ConfigDefaults(vocabSize: 30522, hiddenSize: 768, numLayers: 12, numAttentionHeads: 12,
                                       intermediateSize: 3072, maxPositionEmbeddings: 512, activation: "gelu",
                                       normEpsilon: 1e-12, epsilonKey: "layer_norm_eps"),
        llamaCpp: nil,
        adapterHub: AdapterHubPoints(afterAttention: ["attention.output"], afterFeedForward: ["output"]),
        readConfig: { config, c in
            (config.queryKeyValueBias, config.attentionOutputBias, config.mlpBias) = (true, true, true)
            if try c.reading(BertKey.self).bool(.isDecoder) ?? false {
                throw RuntimeError.unsupportedArchitecture("BERT with is_decoder=true")
            }
        },
        makeBody: { config, builder in try BertBody(config: config, builder: &builder) })

    private enum BertKey: String {
        case isDecoder = "is_decoder"
    }
}

/// BERT's loaded modules.
struct BertBody: ModelBody {
    struct Layer: Sendable {
        let query, key, value, attentionOutput: Int
        let attentionNorm: NormWeights
        let intermediate, output: Int
        let outputNorm: NormWeights
    }

    let wordEmbedding: Int
    let positionEmbedding: ParameterID
    let tokenTypeEmbedding: ParameterID
    let embeddingNorm: NormWeights
    let layers: [Layer]
    let activation: ActivationFunction
    /// BertForSequenceClassification's pooler and classifier; nil for BertModel.
    let classifier: SequenceClassificationHead?

    init(config: ModelConfig, builder: inout ModelBuilder) throws {
        let hidden = config.hiddenSize, inner = config.intermediateSize
        activation = try ActivationFunction(name: config.activation)
        wordEmbedding = try builder.embedding("embeddings.word_embeddings", count: config.vocabSize, dim: hidden)
        positionEmbedding = try builder.parameter("embeddings.position_embeddings.weight",
                                                  [config.maxPositionEmbeddings, hidden])
        tokenTypeEmbedding = try builder.parameter("embeddings.token_type_embeddings.weight",
                                                   [config.typeVocabSize, hidden])
        embeddingNorm = try builder.layerNorm("embeddings.LayerNorm", dim: hidden)
        let attentionWidth = config.numAttentionHeads * config.headDim
        layers = try (0..<config.numLayers).map { i in
            let p = "encoder.layer.\(i)"
            return Layer(
                query: try builder.linear("\(p).attention.self.query", in: hidden, out: attentionWidth, bias: true),
                key: try builder.linear("\(p).attention.self.key", in: hidden, out: attentionWidth, bias: true),
                value: try builder.linear("\(p).attention.self.value", in: hidden, out: attentionWidth, bias: true),
                attentionOutput: try builder.linear("\(p).attention.output.dense", in: attentionWidth, out: hidden,
                                                    bias: true),
                attentionNorm: try builder.layerNorm("\(p).attention.output.LayerNorm", dim: hidden),
                intermediate: try builder.linear("\(p).intermediate.dense", in: hidden, out: inner, bias: true),
                output: try builder.linear("\(p).output.dense", in: inner, out: hidden, bias: true),
                outputNorm: try builder.layerNorm("\(p).output.LayerNorm", dim: hidden))
        }
        // The pooler is not part of last_hidden_state, but adapters may target it (PEFT's "dense").
        let pooler = try builder.optionalLinear("pooler.dense", in: hidden, out: hidden)
        classifier = try config.sequenceClassificationLabels.map {
            try SequenceClassificationHead.bert(labels: $0, pooler: pooler, builder: &builder, hidden: hidden)
        }
    }

    var embeddingAndHead: (embedding: Int, head: Int)? { nil }
    var feedForwardMatrices: Int { 2 }
    var hasLearnedPositions: Bool { true }

    func run(_ pass: ForwardPass, inputIds: [[Int]]) -> FloatTensor { pass.run(self, inputIds: inputIds) }
}

extension ForwardPass {
    func run(_ body: BertBody, inputIds: [[Int]]) -> FloatTensor {
        let config = model.config
        let epsilon = config.normEpsilon
        var x = inputEmbeddings(body.wordEmbedding, inputIds: inputIds)
        // token_type_ids default to zeros: every row adds token-type embedding 0.
        let tokenType = withParameter(body.tokenTypeEmbedding, rows: 0..<1) { Array($0) }
        x.addRowVector(tokenType)
        // Prefix keys/values enter BertModel as a cache, which shifts the position ids past them.
        addPositionRows(&x, table: parameter(body.positionEmbedding), positionOfRow: position(ofRow:))
        norm(&x, body.embeddingNorm, epsilon: epsilon)

        let geometry = AttentionGeometry(
            heads: config.numAttentionHeads, keyValueHeads: config.numAttentionHeads, headDim: config.headDim,
            scale: Float(1 / Double(config.headDim).squareRoot()), causal: false, window: nil)
        for (index, layer) in body.layers.enumerated() {
            let context = attention(q: linear(layer.query, x), k: linear(layer.key, x), v: linear(layer.value, x),
                                    layer: index, geometry: geometry)
            let attended = subBlockEnd(layer: index, position: .afterAttention,
                                       output: linear(layer.attentionOutput, context), residual: x,
                                       norm: layer.attentionNorm, epsilon: epsilon)
            var inner = linear(layer.intermediate, attended)
            body.activation.apply(&inner)
            x = subBlockEnd(layer: index, position: .afterFeedForward, output: linear(layer.output, inner),
                            residual: attended, norm: layer.outputNorm, epsilon: epsilon)
            finishedLayer(index, of: body.layers.count, hidden: x)
        }
        if let classifier = body.classifier { return classify(classifier, hidden: x, inputIds: inputIds) }
        return FloatTensor(shape: [batch, rowsPerItem, config.hiddenSize], values: x.values)
    }
}
