/// The output of a forward pass: fp32 values in row-major order.
public struct FloatTensor: Sendable, Equatable {
    public var shape: [Int]
    public var values: [Float]

    public init(shape: [Int], values: [Float]) {
        self.shape = shape
        self.values = values
    }
}

/// A base model, ready to run forward passes with or without adapters. Its weights stay in the
/// checkpoint's dtype and are widened to fp32 as each layer uses them (`WeightResidency`).
///
/// Outputs match transformers in eval mode: BERT returns `last_hidden_state` [batch, seq, hidden]
/// (BertModel, bidirectional attention, token_type_ids all 0); rotary decoders and GPT-2 return
/// `logits` [batch, seq, vocab] under a causal mask. Prompt tuning adds its virtual tokens to `seq`.
/// `*ForSequenceClassification` checkpoints return `logits` [batch, num_labels]
/// (SequenceClassificationHead).
public final class TransformerModel: Sendable {
    public let config: ModelConfig
    /// Checkpoint tensors the architecture has no use for (e.g. a pre-training head), sorted.
    public let unusedWeights: [String]
    /// The checkpoint prefix of the base model inside task classes ("bert", "model", "transformer").
    public let basePrefix: String

    let parameters: ParameterStore
    let linears: [LinearModule]
    let embeddings: [EmbeddingModule]
    let modules: [String: ModuleReference]
    let body: any ModelBody

    private init(config: ModelConfig, prefix: String, builder: ModelBuilder, body: any ModelBody) {
        self.config = config
        basePrefix = prefix
        parameters = builder.loader.store
        linears = builder.linears
        embeddings = builder.embeddings
        modules = builder.modules
        unusedWeights = builder.loader.unused
        self.body = body
    }

    /// Checks every tensor the config implies in `weights` (name, shape, float dtype) without
    /// reading its values, unless `residency` widens them now. Fails on the first missing or
    /// misshapen tensor, naming it; tensors nothing uses land in `unusedWeights`.
    public static func load(config: ModelConfig, weights: any WeightProvider,
                            residency: WeightResidency = .streamed) throws -> TransformerModel {
        try config.validate()
        let family = config.family
        var builder = ModelBuilder(provider: weights, prefix: family.checkpointPrefix, residency: residency)
        let body = try family.makeBody(config, &builder)
        builder.loader.ignore(where: family.isBuffer)
        return TransformerModel(config: config, prefix: family.checkpointPrefix, builder: builder, body: body)
    }

    /// Runs the model on a rectangular batch of token ids, layer by layer over the whole batch;
    /// `progress` hears (layers done, layers in all) at the start and after each layer.
    public func forward(inputIds: [[Int]], adapters: AdapterSet? = nil,
                        progress: ((Int, Int) -> Void)? = nil) throws -> FloatTensor {
        try forward(inputIds: inputIds, adapters: adapters, progress: progress, observeLayer: nil)
    }

    /// `observeLayer` sees each layer's output hidden states (rows × hidden_size).
    func forward(inputIds: [[Int]], adapters: AdapterSet?, progress: ((Int, Int) -> Void)?,
                 observeLayer: ((Int, TokenMatrix) -> Void)?) throws -> FloatTensor {
        try run(inputIds, adapters, progress, observeLayer, deferredHead: nil).output
    }

    /// A pass that stops at a causal LM's output head, whose logits the caller computes over
    /// tiles of the vocabulary; a model without one (encoders, classifiers) gives its whole output.
    func forwardToHead(inputIds: [[Int]], adapters: AdapterSet?, progress: ((Int, Int) -> Void)?,
                       observeLayer: ((Int, TokenMatrix) -> Void)?) throws -> PassOutput {
        let deferred = DeferredHead()
        let (output, pass) = try run(inputIds, adapters, progress, observeLayer, deferredHead: deferred)
        guard let hidden = deferred.hidden else { return .whole(output) }
        return .tiles(VocabularyLogits(pass: pass, hidden: hidden, head: deferred.head, softcap: deferred.softcap))
    }

    private func run(_ inputIds: [[Int]], _ adapters: AdapterSet?, _ progress: ((Int, Int) -> Void)?,
                     _ observeLayer: ((Int, TokenMatrix) -> Void)?, deferredHead: DeferredHead?) throws -> (output: FloatTensor, pass: ForwardPass) {
        if let adapters, adapters.model !== self { throw RuntimeError.adapterSetForOtherModel }
        try validate(inputIds: inputIds, adapters: adapters, logitsKept: deferredHead == nil)
        let pass = ForwardPass(model: self, adapters: adapters, batch: inputIds.count, tokens: inputIds[0].count,
                               progress: progress, observeLayer: observeLayer, deferredHead: deferredHead)
        progress?(0, config.numLayers)
        let output = body.run(pass, inputIds: inputIds)
        if let error = pass.failure.error { throw error }
        return (output, pass)
    }

    /// The high-water mark of fp32 values widened from the checkpoint and alive at once, over the
    /// model's life: one matrix (or head tile) when streamed, every parameter when widened at load.
    var peakWidenedFloats: Int { parameters.meter.peakFloats }

    /// The module an adapter target names, with or without the base-model prefix.
    func module(named target: String) -> ModuleReference? {
        if let module = modules[target] { return module }
        guard target.hasPrefix(basePrefix + ".") else { return nil }
        return modules[String(target.dropFirst(basePrefix.count + 1))]
    }

    /// The parameter a full-tensor target names, with or without the base-model prefix.
    func parameter(named name: String) -> ParameterID? {
        if let id = parameters.idsByName[name] { return id }
        guard name.hasPrefix(basePrefix + ".") else { return nil }
        return parameters.idsByName[String(name.dropFirst(basePrefix.count + 1))]
    }

    /// Most memory a forward pass may take for its activations: a verification input is a few
    /// sequences, and a shape beyond this is a typo that would otherwise run for hours or exhaust
    /// the machine.
    public static let activationBudget = 4 << 30

    /// About how many floating-point operations one forward pass over `batch × tokens` ids takes:
    /// every layer's projections and MLP, the attention products and, for decoders, the output
    /// head. Decides whether BLAS threads pay (`BLAS.withThreads`); adapters add little.
    public func forwardFLOPs(batch: Int, tokens: Int) -> Double {
        let c = config
        let rows = Double(batch) * Double(tokens)
        let hidden = Double(c.hiddenSize), queryWidth = Double(c.numAttentionHeads * c.headDim)
        let keyValueWidth = Double(c.numKeyValueHeads * c.headDim)
        let mlpMatrices = Double(body.feedForwardMatrices)
        let perLayer = 2 * hidden * queryWidth + 2 * hidden * keyValueWidth + mlpMatrices * hidden * Double(c.intermediateSize)
        let head = c.family.outputHead == nil ? 0 : hidden * Double(c.vocabSize)
        let attention = 2 * Double(tokens) * queryWidth
        return 2 * rows * (Double(c.numLayers) * (perLayer + attention) + head)
    }

    /// Checks a batch shape before any input of that shape is made: positions within a learned
    /// position table (prefix and prompt tokens included) and activations within
    /// `activationBudget` (without the logits when the caller takes them over tiles of the
    /// vocabulary, `logitsKept` false).
    public func checkInputShape(batch: Int, tokens: Int, adapters: AdapterSet? = nil, logitsKept: Bool = true) throws {
        guard batch > 0, tokens > 0 else { throw RuntimeError.invalidInput("the batch is empty") }
        let positions = (adapters?.prefixLength ?? 0) + (adapters?.promptLength ?? 0) + tokens
        // Learned position tables end at max_position_embeddings; rope does not, and
        // transformers runs it past that length, so only the memory budget bounds it.
        guard !body.hasLearnedPositions || positions <= config.maxPositionEmbeddings else {
            throw RuntimeError.invalidInput(
                "\(positions) positions exceed max_position_embeddings \(config.maxPositionEmbeddings)")
        }
        let bytes = activationBytes(batch: batch, tokens: tokens, positions: positions, logitsKept: logitsKept)
        guard bytes <= Double(Self.activationBudget) else {
            throw RuntimeError.invalidInput(String(format: "a batch of %d × %d tokens needs about %.1f GB of activations, more than the %d GB allowed; use a smaller shape",
                                                   batch, tokens, bytes / 1e9, Self.activationBudget >> 30))
        }
    }

    /// fp32 activations of a pass: the widest per-token row (logits, MLP or fused QKV) twice and
    /// the attention scores of one layer, in Double so no product overflows.
    func activationBytes(batch: Int, tokens: Int, positions: Int, logitsKept: Bool = true) -> Double {
        let widest = Double(max(logitsKept ? config.vocabSize : 0, config.intermediateSize, 3 * config.hiddenSize))
        let rows = Double(batch) * Double(tokens)
        return 4 * (2 * rows * widest + rows * Double(config.numAttentionHeads) * Double(positions))
    }

    /// The memory a pass over `batch × tokens` ids needs: its activations and the largest buffer
    /// of widened weights (one tensor or tile), with the stored bytes mapped behind it.
    public func passMemory(batch: Int, tokens: Int, adapters: AdapterSet? = nil, logitsKept: Bool = true) -> (activations: Double, weights: Double) {
        let positions = (adapters?.prefixLength ?? 0) + (adapters?.promptLength ?? 0) + tokens
        let largest = parameters.shapes.map { Double(Shape.elementCount($0) ?? 0) }.max() ?? 0
        let buffer = parameters.residency.tileFloats.map { min(largest, Double($0)) } ?? 0
        // Widened at load, the weights are already resident; streamed, one buffer plus its bytes.
        return (activationBytes(batch: batch, tokens: tokens, positions: positions, logitsKept: logitsKept), buffer * (4 + 4))
    }

    private func validate(inputIds: [[Int]], adapters: AdapterSet?, logitsKept: Bool) throws {
        guard let length = inputIds.first?.count, length > 0 else {
            throw RuntimeError.invalidInput("the batch is empty")
        }
        try checkInputShape(batch: inputIds.count, tokens: length, adapters: adapters, logitsKept: logitsKept)
        try checkClassificationBatch(inputIds.count)
        for (row, ids) in inputIds.enumerated() {
            guard ids.count == length else {
                throw RuntimeError.invalidInput("row \(row) has \(ids.count) tokens but row 0 has \(length)")
            }
            if let bad = ids.first(where: { $0 < 0 || $0 >= config.vocabSize }) {
                throw RuntimeError.invalidInput("token id \(bad) in row \(row) is outside the vocabulary of \(config.vocabSize)")
            }
        }
    }
}
