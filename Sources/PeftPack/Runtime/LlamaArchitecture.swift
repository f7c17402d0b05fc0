/// LlamaForCausalLM and its relatives (Mistral, Qwen2): pre-RMSNorm decoder layers with rotary
/// positions, grouped-query attention and a gated (SwiGLU-style) feed-forward block.
struct LlamaBody: Sendable {
    struct Layer: Sendable {
        let inputNorm: NormWeights
        let query, key, value, attentionOutput: Int
        let postAttentionNorm: NormWeights
        let gate, up, down: Int
    }

    let embedding: Int
    let layers: [Layer]
    let finalNorm: NormWeights
    /// lm_head, or a sequence classifier's `score`.
    let head: Int
    let classifier: SequenceClassificationHead?
    let activation: ActivationFunction
    let rope: RopeParameters

    init(config: ModelConfig, builder: inout ModelBuilder) throws {
        guard let rope = config.rope else { throw RuntimeError.invalidConfig("rotary embedding parameters are missing") }
        self.rope = rope
        activation = try ActivationFunction(name: config.activation)
        let hidden = config.hiddenSize, inner = config.intermediateSize
        let queryWidth = config.numAttentionHeads * config.headDim
        let keyValueWidth = config.numKeyValueHeads * config.headDim
        let qkvBias = config.queryKeyValueBias, outBias = config.attentionOutputBias, mlpBias = config.mlpBias
        embedding = try builder.embedding("embed_tokens", count: config.vocabSize, dim: hidden)
        layers = try (0..<config.numLayers).map { i in
            let p = "layers.\(i)"
            return Layer(
                inputNorm: try builder.rmsNorm("\(p).input_layernorm", dim: hidden),
                query: try builder.linear("\(p).self_attn.q_proj", in: hidden, out: queryWidth, bias: qkvBias),
                key: try builder.linear("\(p).self_attn.k_proj", in: hidden, out: keyValueWidth, bias: qkvBias),
                value: try builder.linear("\(p).self_attn.v_proj", in: hidden, out: keyValueWidth, bias: qkvBias),
                attentionOutput: try builder.linear("\(p).self_attn.o_proj", in: queryWidth, out: hidden, bias: outBias),
                postAttentionNorm: try builder.rmsNorm("\(p).post_attention_layernorm", dim: hidden),
                gate: try builder.linear("\(p).mlp.gate_proj", in: hidden, out: inner, bias: mlpBias),
                up: try builder.linear("\(p).mlp.up_proj", in: hidden, out: inner, bias: mlpBias),
                down: try builder.linear("\(p).mlp.down_proj", in: inner, out: hidden, bias: mlpBias))
        }
        finalNorm = try builder.rmsNorm("norm", dim: hidden)
        if let labels = config.sequenceClassificationLabels {
            let head = try SequenceClassificationHead.decoder(labels: labels, padTokenId: config.padTokenId, builder: &builder, hidden: hidden)
            (classifier, self.head) = (head, head.classifier)
        } else {
            classifier = nil
            head = try builder.head("lm_head", embedding: embedding, tied: config.tieWordEmbeddings)
        }
        builder.loader.ignore { $0.hasSuffix("rotary_emb.inv_freq") }
    }
}

extension ForwardPass {
    func run(_ body: LlamaBody, inputIds: [[Int]]) -> FloatTensor {
        let config = model.config
        let epsilon = config.normEpsilon
        let rotary = RotaryTables(parameters: body.rope, headDim: config.headDim,
                                  maxPositionEmbeddings: config.maxPositionEmbeddings,
                                  positions: prefixLength + rowsPerItem)
        var x = inputEmbeddings(body.embedding, inputIds: inputIds)
        for (index, layer) in body.layers.enumerated() {
            let geometry = AttentionGeometry(
                heads: config.numAttentionHeads, keyValueHeads: config.numKeyValueHeads, headDim: config.headDim,
                scale: Float(1 / Double(config.headDim).squareRoot()), causal: true,
                window: config.slidingWindowLayers.contains(index) ? config.slidingWindow : nil)
            var normed = x
            norm(&normed, layer.inputNorm, epsilon: epsilon)
            var q = linear(layer.query, normed)
            var k = linear(layer.key, normed)
            rotary.apply(to: &q, heads: config.numAttentionHeads, positionOfRow: position(ofRow:))
            rotary.apply(to: &k, heads: config.numKeyValueHeads, positionOfRow: position(ofRow:))
            let context = attention(q: q, k: k, v: linear(layer.value, normed), layer: index, geometry: geometry)
            x = subBlockEnd(layer: index, position: .afterAttention,
                            output: linear(layer.attentionOutput, context), residual: x, norm: nil, epsilon: epsilon)

            normed = x
            norm(&normed, layer.postAttentionNorm, epsilon: epsilon)
            var gate = linear(layer.gate, normed)
            body.activation.apply(&gate)
            let up = linear(layer.up, normed)
            for i in gate.values.indices { gate.values[i] *= up.values[i] }
            x = subBlockEnd(layer: index, position: .afterFeedForward, output: linear(layer.down, gate),
                            residual: x, norm: nil, epsilon: epsilon)
        }
        norm(&x, body.finalNorm, epsilon: epsilon)
        if let classifier = body.classifier { return classify(classifier, hidden: x, inputIds: inputIds) }
        let logits = linear(body.head, x)
        return FloatTensor(shape: [batch, rowsPerItem, config.vocabSize], values: logits.values)
    }
}
