import Foundation

/// The module names and fixed traits of a rotary decoder family (Llama and the families derived
/// from it in transformers: Mistral, Qwen2/3, Gemma 2/3, Phi-3). Its family file states it; the
/// config supplies the sizes and the config-dependent traits (biases, sliding windows, rope,
/// soft-capping, query scale).
struct DecoderLayout: Sendable {
    enum Attention: Sendable {
        /// Separate q, k and v projections.
        case separate(query: String, key: String, value: String)
        /// One projection whose output rows are q, then k, then v (Phi-3's qkv_proj).
        case fused(String)
    }

    enum FeedForward: Sendable {
        /// down(act(gate(x)) · up(x)).
        case gated(gate: String, up: String)
        /// One projection whose output is [gate | up] (Phi-3's gate_up_proj, chunk(2, dim=-1)).
        case fusedGated(String)
    }

    var tokenEmbedding = "embed_tokens"
    var layerPath = "layers"
    var attention = Attention.separate(query: "self_attn.q_proj", key: "self_attn.k_proj", value: "self_attn.v_proj")
    var attentionOutput = "self_attn.o_proj"
    var feedForward = FeedForward.gated(gate: "mlp.gate_proj", up: "mlp.up_proj")
    var down = "mlp.down_proj"
    var inputNorm = "input_layernorm"
    /// The norm before the feed-forward block (Llama calls it post_attention_layernorm).
    var preFeedForwardNorm = "post_attention_layernorm"
    /// Gemma 2/3's sandwich norms on each sub-block's output, before the residual add.
    var postAttentionNorm: String? = nil
    var postFeedForwardNorm: String? = nil
    /// Per-head RMSNorm of queries and keys before rope (Qwen3, Gemma 3).
    var queryNorm: String? = nil
    var keyNorm: String? = nil
    var finalNorm = "norm"
    var outputHead = "lm_head"
    /// Gemma's RMSNorm scales by (1 + w), in fp32.
    var normsOffsetByOne = false
    /// Gemma multiplies the input embeddings by √hidden_size (rounded to the hidden dtype).
    var scalesEmbeddings = false
    /// Phi-3's attention rotates only the leading int(head_dim · partial_rotary_factor) dims of a
    /// head; the other families' transformers code fails on a partial_rotary_factor below 1.
    var rotatesPartialHeads = false

    static let llama = DecoderLayout()

    /// Every linear module of a layer, in the order transformers defines them.
    var linearModules: [String] {
        let projections: [String]
        switch attention {
        case .separate(let q, let k, let v): projections = [q, k, v]
        case .fused(let qkv): projections = [qkv]
        }
        let feedForwardIn: [String]
        switch feedForward {
        case .gated(let gate, let up): feedForwardIn = [gate, up]
        case .fusedGated(let gateUp): feedForwardIn = [gateUp]
        }
        return projections + [attentionOutput] + feedForwardIn + [down]
    }

    var layerNorms: [String] {
        [inputNorm, preFeedForwardNorm] + [postAttentionNorm, postFeedForwardNorm, queryNorm, keyNorm].compactMap { $0 }
    }
}

/// A rotary decoder's loaded modules: pre-norm layers with grouped-query attention and a gated
/// feed-forward block, as `DecoderLayout` names and shapes them.
struct DecoderBody: ModelBody {
    enum Projections: Sendable {
        case separate(query: Int, key: Int, value: Int)
        case fused(Int)
    }

    enum FeedForwardIn: Sendable {
        case separate(gate: Int, up: Int)
        case fused(Int)
    }

    struct Layer: Sendable {
        let inputNorm: NormWeights
        let projections: Projections
        let queryNorm, keyNorm: NormWeights?
        let attentionOutput: Int
        let postAttentionNorm: NormWeights?
        let preFeedForwardNorm: NormWeights
        let feedForwardIn: FeedForwardIn
        let down: Int
        let postFeedForwardNorm: NormWeights?
    }

    let layout: DecoderLayout
    let embedding: Int
    let layers: [Layer]
    let finalNorm: NormWeights
    /// lm_head, or a sequence classifier's `score`.
    let head: Int
    let classifier: SequenceClassificationHead?
    let activation: ActivationFunction

    var embeddingAndHead: (embedding: Int, head: Int)? { classifier == nil ? (embedding, head) : nil }
    var feedForwardMatrices: Int { 3 }
    var hasLearnedPositions: Bool { false }

    init(config: ModelConfig, layout: DecoderLayout, builder: inout ModelBuilder) throws {
        guard let rope = config.rope else { throw RuntimeError.invalidConfig("rotary embedding parameters are missing") }
        if !layout.rotatesPartialHeads, let partial = rope.partialRotaryFactor, partial != 1 {
            throw RuntimeError.invalidConfig("partial_rotary_factor \(partial) is not supported for \(config.modelType) models")
        }
        self.layout = layout
        activation = try ActivationFunction(name: config.activation)
        let hidden = config.hiddenSize, inner = config.intermediateSize, headDim = config.headDim
        let queryWidth = config.numAttentionHeads * headDim
        let keyValueWidth = config.numKeyValueHeads * headDim
        let qkvBias = config.queryKeyValueBias, outBias = config.attentionOutputBias, mlpBias = config.mlpBias
        let offset = layout.normsOffsetByOne
        embedding = try builder.embedding(layout.tokenEmbedding, count: config.vocabSize, dim: hidden)
        layers = try (0..<config.numLayers).map { i in
            let p = "\(layout.layerPath).\(i)"
            func norm(_ name: String?, _ dim: Int) throws -> NormWeights? {
                try name.map { try builder.rmsNorm("\(p).\($0)", dim: dim, offsetByOne: offset) }
            }
            let projections: Projections
            switch layout.attention {
            case .separate(let q, let k, let v):
                projections = .separate(
                    query: try builder.linear("\(p).\(q)", in: hidden, out: queryWidth, bias: qkvBias),
                    key: try builder.linear("\(p).\(k)", in: hidden, out: keyValueWidth, bias: qkvBias),
                    value: try builder.linear("\(p).\(v)", in: hidden, out: keyValueWidth, bias: qkvBias))
            case .fused(let qkv):
                projections = .fused(try builder.linear("\(p).\(qkv)", in: hidden, out: queryWidth + 2 * keyValueWidth, bias: qkvBias))
            }
            let feedForwardIn: FeedForwardIn
            switch layout.feedForward {
            case .gated(let gate, let up):
                feedForwardIn = .separate(gate: try builder.linear("\(p).\(gate)", in: hidden, out: inner, bias: mlpBias),
                                          up: try builder.linear("\(p).\(up)", in: hidden, out: inner, bias: mlpBias))
            case .fusedGated(let gateUp):
                feedForwardIn = .fused(try builder.linear("\(p).\(gateUp)", in: hidden, out: 2 * inner, bias: mlpBias))
            }
            return Layer(
                inputNorm: try norm(layout.inputNorm, hidden)!,
                projections: projections,
                queryNorm: try norm(layout.queryNorm, headDim), keyNorm: try norm(layout.keyNorm, headDim),
                attentionOutput: try builder.linear("\(p).\(layout.attentionOutput)", in: queryWidth, out: hidden, bias: outBias),
                postAttentionNorm: try norm(layout.postAttentionNorm, hidden),
                preFeedForwardNorm: try norm(layout.preFeedForwardNorm, hidden)!,
                feedForwardIn: feedForwardIn,
                down: try builder.linear("\(p).\(layout.down)", in: inner, out: hidden, bias: mlpBias),
                postFeedForwardNorm: try norm(layout.postFeedForwardNorm, hidden))
        }
        finalNorm = try builder.rmsNorm(layout.finalNorm, dim: hidden, offsetByOne: offset)
        if let labels = config.sequenceClassificationLabels {
            let head = try SequenceClassificationHead.decoder(labels: labels, padTokenId: config.padTokenId, builder: &builder, hidden: hidden)
            (classifier, self.head) = (head, head.classifier)
        } else {
            classifier = nil
            head = try builder.head(layout.outputHead, embedding: embedding, tied: config.tieWordEmbeddings)
        }
    }

    func run(_ pass: ForwardPass, inputIds: [[Int]]) -> FloatTensor {
        let config = pass.model.config
        let epsilon = config.normEpsilon
        let positions = pass.prefixLength + pass.rowsPerItem
        let globalRotary = RotaryTables(parameters: config.rope!, headDim: config.headDim,
                                        maxPositionEmbeddings: config.maxPositionEmbeddings, positions: positions)
        let slidingRotary = config.slidingRope.map {
            RotaryTables(parameters: $0, headDim: config.headDim, maxPositionEmbeddings: config.maxPositionEmbeddings, positions: positions)
        }
        var x = pass.inputEmbeddings(embedding, inputIds: inputIds)
        if layout.scalesEmbeddings {
            let normalizer = Float(Double(config.hiddenSize).squareRoot())
            x.values.withUnsafeMutableBufferPointer { v in for i in 0..<v.count { v[i] *= normalizer } }
        }
        for (index, layer) in layers.enumerated() {
            let sliding = config.slidingWindowLayers.contains(index)
            let rotary = sliding ? slidingRotary ?? globalRotary : globalRotary
            let geometry = AttentionGeometry(
                heads: config.numAttentionHeads, keyValueHeads: config.numKeyValueHeads, headDim: config.headDim,
                scale: Float(config.attentionScale ?? 1 / Double(config.headDim).squareRoot()), causal: true,
                window: sliding ? config.slidingWindow : nil, softcap: config.attentionSoftcap.map(Float.init))
            var normed = x
            pass.norm(&normed, layer.inputNorm, epsilon: epsilon)
            var (q, k, v) = projectQueryKeyValue(pass, layer, normed)
            if let queryNorm = layer.queryNorm { pass.headNorm(&q, queryNorm, headDim: config.headDim, epsilon: epsilon) }
            if let keyNorm = layer.keyNorm { pass.headNorm(&k, keyNorm, headDim: config.headDim, epsilon: epsilon) }
            rotary.apply(to: &q, heads: config.numAttentionHeads, positionOfRow: pass.position(ofRow:))
            rotary.apply(to: &k, heads: config.numKeyValueHeads, positionOfRow: pass.position(ofRow:))
            let context = pass.attention(q: q, k: k, v: v, layer: index, geometry: geometry)
            var attended = pass.linear(layer.attentionOutput, context)
            if let post = layer.postAttentionNorm { pass.norm(&attended, post, epsilon: epsilon) }
            x = pass.subBlockEnd(layer: index, position: .afterAttention, output: attended, residual: x, norm: nil, epsilon: epsilon)

            normed = x
            pass.norm(&normed, layer.preFeedForwardNorm, epsilon: epsilon)
            var fed = pass.linear(layer.down, gatedFeedForward(pass, layer, normed))
            if let post = layer.postFeedForwardNorm { pass.norm(&fed, post, epsilon: epsilon) }
            x = pass.subBlockEnd(layer: index, position: .afterFeedForward, output: fed, residual: x, norm: nil, epsilon: epsilon)
            pass.finishedLayer(index, of: layers.count, hidden: x)
        }
        pass.norm(&x, finalNorm, epsilon: epsilon)
        if let classifier { return pass.classify(classifier, hidden: x, inputIds: inputIds) }
        return pass.vocabularyLogits(head, x, softcap: config.finalLogitSoftcap.map(Float.init))
    }

    private func projectQueryKeyValue(_ pass: ForwardPass, _ layer: Layer, _ x: TokenMatrix) -> (TokenMatrix, TokenMatrix, TokenMatrix) {
        switch layer.projections {
        case .separate(let query, let key, let value):
            return (pass.linear(query, x), pass.linear(key, x), pass.linear(value, x))
        case .fused(let qkv):
            let config = pass.model.config
            let queryWidth = config.numAttentionHeads * config.headDim, keyValueWidth = config.numKeyValueHeads * config.headDim
            let fused = pass.linear(qkv, x)
            return (fused.columns(0..<queryWidth), fused.columns(queryWidth..<queryWidth + keyValueWidth),
                    fused.columns(queryWidth + keyValueWidth..<queryWidth + 2 * keyValueWidth))
        }
    }

    /// act(gate(x)) · up(x).
    private func gatedFeedForward(_ pass: ForwardPass, _ layer: Layer, _ x: TokenMatrix) -> TokenMatrix {
        var gate: TokenMatrix, up: TokenMatrix
        switch layer.feedForwardIn {
        case .separate(let gateIndex, let upIndex):
            (gate, up) = (pass.linear(gateIndex, x), pass.linear(upIndex, x))
        case .fused(let gateUp):
            let fused = pass.linear(gateUp, x)
            let inner = fused.cols / 2
            (gate, up) = (fused.columns(0..<inner), fused.columns(inner..<2 * inner))
        }
        activation.apply(&gate)
        for i in gate.values.indices { gate.values[i] *= up.values[i] }
        return gate
    }
}
