extension Architecture {
    /// GPT2LMHeadModel: pre-LayerNorm decoder blocks with learned positions and transformers
    /// Conv1D weights stored [in, out]; q, k and v fused in c_attn. GPT2Config serializes its own
    /// field names (n_embd, n_layer, …: its attribute_map) and ties the head by default.
    static let gpt2 = Architecture(
        modelType: "gpt2", classNames: ["GPT2LMHeadModel", "GPT2Model", "GPT2ForSequenceClassification"],
        checkpointPrefix: "transformer", layerPath: "h",
        layerModules: [
            LayerModule("attn.c_attn", layout: .conv1d, llamaCpp: "attn_qkv"),
            LayerModule("attn.c_proj", layout: .conv1d, llamaCpp: "attn_output"),
            LayerModule("mlp.c_fc", layout: .conv1d, llamaCpp: "ffn_up"),
            LayerModule("mlp.c_proj", layout: .conv1d, llamaCpp: "ffn_down"),
            // The cross-attention query of a GPT-2 with add_cross_attention (not run here).
            LayerModule("attn.q_attn", layout: .conv1d),
        ],
        tokenEmbedding: "wte", otherEmbeddings: ["wpe"], outputHead: "lm_head",
        layerNorms: ["ln_1", "ln_2"], modelNorms: ["ln_f"],
        // The causal-mask buffers old checkpoints carry (GPT2PreTrainedModel ignores them too).
        buffers: [".attn.bias", ".attn.masked_bias"],
        tiesEmbeddingsByDefault: true,
        configDefaults: ConfigDefaults(vocabSize: 50257, hiddenSize: 768, numLayers: 12, numAttentionHeads: 12,
                                       maxPositionEmbeddings: 1024, activation: "gelu_new", normEpsilon: 1e-5,
                                       activationKey: "activation_function", epsilonKey: "layer_norm_epsilon"),
        llamaCpp: LlamaCppNaming(architecture: "gpt2", permutesRotaryRows: false),
        adapterHub: AdapterHubPoints(afterAttention: ["attention_adapters"], afterFeedForward: ["output_adapters"]),
        readConfig: { config, c in
            let g = c.reading(GPT2Key.self)
            config.hiddenSize = try g.int(.nEmbd) ?? config.hiddenSize
            config.numLayers = try g.int(.nLayer) ?? config.numLayers
            config.numAttentionHeads = try g.int(.nHead) ?? config.numAttentionHeads
            config.maxPositionEmbeddings = try g.int(.nPositions) ?? config.maxPositionEmbeddings
            config.intermediateSize = try g.int(.nInner) ?? 4 * config.hiddenSize
            (config.queryKeyValueBias, config.attentionOutputBias, config.mlpBias) = (true, true, true)
            config.scaleAttentionWeights = try g.bool(.scaleAttnWeights) ?? true
            config.scaleAttentionByInverseLayerIndex = try g.bool(.scaleAttnByInverseLayerIdx) ?? false
        },
        makeBody: { config, builder in try GPT2Body(config: config, builder: &builder) })

    private enum GPT2Key: String {
        case nEmbd = "n_embd", nLayer = "n_layer", nHead = "n_head", nInner = "n_inner", nPositions = "n_positions"
        case scaleAttnWeights = "scale_attn_weights", scaleAttnByInverseLayerIdx = "scale_attn_by_inverse_layer_idx"
    }
}

/// GPT-2's loaded modules; the head is tied to the token embedding unless the config says otherwise.
struct GPT2Body: ModelBody {
    struct Layer: Sendable {
        let attentionNorm: NormWeights
        let queryKeyValue, attentionOutput: Int
        let feedForwardNorm: NormWeights
        let feedForwardIn, feedForwardOut: Int
    }

    let tokenEmbedding: Int
    /// wpe, an nn.Embedding looked up by position: PEFT can adapt it like the token embedding.
    let positionEmbedding: Int
    let layers: [Layer]
    let finalNorm: NormWeights
    /// lm_head, or a sequence classifier's `score`.
    let head: Int
    let classifier: SequenceClassificationHead?
    let activation: ActivationFunction

    init(config: ModelConfig, builder: inout ModelBuilder) throws {
        activation = try ActivationFunction(name: config.activation)
        let hidden = config.hiddenSize, inner = config.intermediateSize
        tokenEmbedding = try builder.embedding("wte", count: config.vocabSize, dim: hidden)
        positionEmbedding = try builder.embedding("wpe", count: config.maxPositionEmbeddings, dim: hidden)
        layers = try (0..<config.numLayers).map { i in
            let p = "h.\(i)"
            return Layer(
                attentionNorm: try builder.layerNorm("\(p).ln_1", dim: hidden),
                queryKeyValue: try builder.linear("\(p).attn.c_attn", in: hidden, out: 3 * hidden, bias: true,
                                                  conv1d: true),
                attentionOutput: try builder.linear("\(p).attn.c_proj", in: hidden, out: hidden, bias: true,
                                                    conv1d: true),
                feedForwardNorm: try builder.layerNorm("\(p).ln_2", dim: hidden),
                feedForwardIn: try builder.linear("\(p).mlp.c_fc", in: hidden, out: inner, bias: true, conv1d: true),
                feedForwardOut: try builder.linear("\(p).mlp.c_proj", in: inner, out: hidden, bias: true, conv1d: true))
        }
        finalNorm = try builder.layerNorm("ln_f", dim: hidden)
        if let labels = config.sequenceClassificationLabels {
            let head = try SequenceClassificationHead.decoder(labels: labels, padTokenId: config.padTokenId, builder: &builder, hidden: hidden)
            (classifier, self.head) = (head, head.classifier)
        } else {
            classifier = nil
            head = try builder.head("lm_head", embedding: tokenEmbedding, tied: config.tieWordEmbeddings)
        }
    }

    var embeddingAndHead: (embedding: Int, head: Int)? { classifier == nil ? (tokenEmbedding, head) : nil }
    var feedForwardMatrices: Int { 2 }
    var hasLearnedPositions: Bool { true }

    func run(_ pass: ForwardPass, inputIds: [[Int]]) -> FloatTensor { pass.run(self, inputIds: inputIds) }
}

extension ForwardPass {
    func run(_ body: GPT2Body, inputIds: [[Int]]) -> FloatTensor {
        let config = model.config
        let epsilon = config.normEpsilon
        let hidden = config.hiddenSize
        var x = inputEmbeddings(body.tokenEmbedding, inputIds: inputIds)
        x.add(embed(body.positionEmbedding, ids: (0..<x.rows).map(position(ofRow:))))
        for (index, layer) in body.layers.enumerated() {
            var scale = config.scaleAttentionWeights ? 1 / Double(config.headDim).squareRoot() : 1
            if config.scaleAttentionByInverseLayerIndex { scale /= Double(index + 1) }
            let geometry = AttentionGeometry(
                heads: config.numAttentionHeads, keyValueHeads: config.numAttentionHeads, headDim: config.headDim,
                scale: Float(scale), causal: true, window: nil)
            var normed = x
            norm(&normed, layer.attentionNorm, epsilon: epsilon)
            let qkv = linear(layer.queryKeyValue, normed)
            let context = attention(q: qkv, qOffset: 0, k: qkv, kOffset: hidden, v: qkv, vOffset: 2 * hidden,
                                    layer: index, geometry: geometry)
            x = subBlockEnd(layer: index, position: .afterAttention,
                            output: linear(layer.attentionOutput, context), residual: x, norm: nil, epsilon: epsilon)

            normed = x
            norm(&normed, layer.feedForwardNorm, epsilon: epsilon)
            var inner = linear(layer.feedForwardIn, normed)
            body.activation.apply(&inner)
            x = subBlockEnd(layer: index, position: .afterFeedForward, output: linear(layer.feedForwardOut, inner),
                            residual: x, norm: nil, epsilon: epsilon)
            finishedLayer(index, of: body.layers.count, hidden: x)
        }
        norm(&x, body.finalNorm, epsilon: epsilon)
        if let classifier = body.classifier { return classify(classifier, hidden: x, inputIds: inputIds) }
        return vocabularyLogits(body.head, x, softcap: nil)
    }
}
