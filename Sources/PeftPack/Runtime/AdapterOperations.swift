/// A low-rank update of one linear or embedding module: ΔW = scale · B·A, with DoRA's per-output
/// rescaling when `doraFactor` is set. Linear: A [r, in], B [out, r]. Embedding: A [r, vocab],
/// B [dim, r], so that the lookup of token t adds scale · B·A[:, t].
struct LowRankUpdate: Sendable {
    let a: [Float]
    let b: [Float]
    let rank: Int
    let scale: Float
    /// scale · lora_B.bias (PEFT lora_bias=True).
    let scaledBBias: [Float]?
    /// DoRA: magnitude / ‖W + scale·B·A‖ per output feature, the norm taken over the input
    /// features and treated as a constant, as PEFT's DoraLinearLayer computes it.
    let doraFactor: [Float]?

    /// The update of output features `outputs` only (of a linear module).
    func restricted(to outputs: Range<Int>) -> LowRankUpdate {
        LowRankUpdate(a: a, b: Array(b[(outputs.lowerBound * rank)..<(outputs.upperBound * rank)]), rank: rank, scale: scale,
                      scaledBBias: scaledBBias.map { Array($0[outputs]) }, doraFactor: doraFactor.map { Array($0[outputs]) })
    }
}

/// Everything attached to one linear module, applied in this order: IA3 input scaling of the
/// base product's input, the base product and bias, IA3 output scaling (bias included, as PEFT
/// scales the base layer's result), then each low-rank update on the unscaled input.
struct LinearAdapters: Sendable {
    var inputScale: [Float]?
    var outputScale: [Float]?
    var updates: [LowRankUpdate] = []
}

/// An AdapterHub bottleneck block: down projection, non-linearity, up projection, scaling,
/// with the residual and layer-norm placement flags of its BnConfig.
struct BottleneckBlock: Sendable {
    let downWeight: [Float]
    let downBias: [Float]?
    let upWeight: [Float]
    let upBias: [Float]?
    let bottleneckSize: Int
    let activation: ActivationFunction
    let scaling: Float
    let originalLnBefore: Bool
    let originalLnAfter: Bool
    let residualBeforeLn: Bool
}

struct BottleneckSite: Hashable, Sendable {
    let layer: Int
    let position: BottleneckPosition
}

extension ForwardPass {
    /// A linear module's output with every adapter attached to it; only output features
    /// `outputs` when given (a tile of an output head's vocabulary; nn.Linear only).
    func linear(_ index: Int, _ x: TokenMatrix, outputs: Range<Int>? = nil) -> TokenMatrix {
        let module = model.linears[index]
        let outputs = outputs ?? 0..<module.outFeatures
        precondition(!module.storedTransposed || outputs.count == module.outFeatures, "Conv1D outputs are computed whole")
        let whole = outputs.count == module.outFeatures
        let attached = adapters?.linear[index]
        let input = attached?.inputScale.map { x.scalingColumns(by: $0) } ?? x
        var y = TokenMatrix(rows: x.rows, cols: outputs.count)
        project(input, module, outputs: outputs, into: &y)
        let bias = module.bias.map { whole ? parameter($0) : Array(parameter($0)[outputs]) }
        if let bias { y.addRowVector(bias) }
        if let scale = attached?.outputScale { y.scaleColumns(by: whole ? scale : Array(scale[outputs])) }
        for update in attached?.updates ?? [] {
            apply(whole ? update : update.restricted(to: outputs), input: x, to: &y, bias: bias)
        }
        return y
    }

    /// `y += x · Wᵀ` (or `x · W` for Conv1D) over tiles of the weight's stored rows (at most
    /// `WeightResidency.tileFloats` values), each widened for its product only. An nn.Linear tile is a
    /// block of output features, so every output keeps one dot product over all inputs; a Conv1D
    /// tile is a block of input features, summed into `y` in turn.
    private func project(_ x: TokenMatrix, _ module: LinearModule, outputs: Range<Int>, into y: inout TokenMatrix) {
        let (storedRows, width) = module.storedTransposed ? (0..<module.inFeatures, module.outFeatures) : (outputs, module.inFeatures)
        let tileRows = model.parameters.tileRows(width: width)
        let (rows, inFeatures, outFeatures) = (x.rows, module.inFeatures, outputs.count)
        x.values.withUnsafeBufferPointer { xp in
            y.values.withUnsafeMutableBufferPointer { yp in
                for start in stride(from: storedRows.lowerBound, to: storedRows.upperBound, by: tileRows) {
                    let tile = start..<min(start + tileRows, storedRows.upperBound)
                    withParameter(module.weight, rows: tile) { w in
                        if module.storedTransposed {
                            RuntimeKernels.gemm(transposeA: false, transposeB: false, m: rows, n: outFeatures, k: tile.count, alpha: 1,
                                                a: xp.baseAddress! + tile.lowerBound, lda: inFeatures, b: w.baseAddress!, ldb: outFeatures,
                                                beta: 1, c: yp.baseAddress!, ldc: outFeatures)
                        } else {
                            RuntimeKernels.gemm(transposeA: false, transposeB: true, m: rows, n: tile.count, k: inFeatures, alpha: 1,
                                                a: xp.baseAddress!, lda: inFeatures, b: w.baseAddress!, ldb: inFeatures,
                                                beta: 1, c: yp.baseAddress! + (tile.lowerBound - outputs.lowerBound), ldc: outFeatures)
                        }
                    }
                }
            }
        }
    }

    private func apply(_ update: LowRankUpdate, input x: TokenMatrix, to y: inout TokenMatrix, bias: [Float]?) {
        let down = RuntimeKernels.project(x, weight: update.a, outFeatures: update.rank, storedTransposed: false)
        guard let factor = update.doraFactor else {
            RuntimeKernels.accumulate(down, weight: update.b, outFeatures: y.cols, storedTransposed: false,
                               alpha: update.scale, into: &y)
            if let bBias = update.scaledBBias { y.addRowVector(bBias) }
            return
        }
        // PEFT adds (f − 1)·(result − bias) + f·scale·B·A·x to the running result, i.e. the
        // output so far without its bias is rescaled together with this update.
        var delta = TokenMatrix(rows: y.rows, cols: y.cols)
        RuntimeKernels.accumulate(down, weight: update.b, outFeatures: y.cols, storedTransposed: false,
                           alpha: update.scale, into: &delta)
        let cols = y.cols
        for row in 0..<y.rows {
            for col in 0..<cols {
                let i = row * cols + col
                let b = bias?[col] ?? 0
                y.values[i] = factor[col] * (y.values[i] - b) + b + factor[col] * delta.values[i]
            }
        }
    }

    /// Embedding lookup with every low-rank update of that embedding.
    func embed(_ index: Int, ids: [Int]) -> TokenMatrix {
        let module = model.embeddings[index]
        let dim = module.dim
        var y = TokenMatrix(rows: ids.count, cols: dim)
        // Only the rows the input uses are widened, never the table.
        for (row, id) in ids.enumerated() {
            withParameter(module.weight, rows: id..<(id + 1)) { y.values.replaceSubrange(row * dim..<(row + 1) * dim, with: $0) }
        }
        for update in adapters?.embedding[index] ?? [] {
            var down = TokenMatrix(rows: ids.count, cols: update.rank)
            for (row, id) in ids.enumerated() {
                for r in 0..<update.rank { down.values[row * update.rank + r] = update.a[r * module.count + id] }
            }
            var delta = TokenMatrix(rows: ids.count, cols: dim)
            RuntimeKernels.accumulate(down, weight: update.b, outFeatures: dim, storedTransposed: false,
                               alpha: update.scale, into: &delta)
            if let factor = update.doraFactor {
                y.scaleColumns(by: factor)
                delta.scaleColumns(by: factor)
            }
            y.add(delta)
        }
        return y
    }

    /// The end of an attention or feed-forward sub-block: `output` is the sub-block's projection,
    /// `residual` its input. Without bottleneck adapters this is the model's own residual add
    /// (and post-LayerNorm for BERT). With them it follows AdapterHub's BottleneckLayer for a Stack:
    /// pre_forward, the adapter, then the last adapter's post_forward.
    func subBlockEnd(layer: Int, position: BottleneckPosition, output: TokenMatrix, residual: TokenMatrix,
                     norm: NormWeights?, epsilon: Double) -> TokenMatrix {
        let blocks = adapters?.bottlenecks[BottleneckSite(layer: layer, position: position)] ?? []
        var hidden = output
        guard let last = blocks.last else {
            hidden.add(residual)
            if let norm { self.norm(&hidden, norm, epsilon: epsilon) }
            return hidden
        }
        for block in blocks {
            var adapterResidual = hidden
            if block.originalLnBefore {
                hidden.add(residual)
                if let norm { self.norm(&hidden, norm, epsilon: epsilon) }
            }
            if !block.residualBeforeLn { adapterResidual = hidden }
            hidden = run(block, hidden, adapterResidual: adapterResidual)
        }
        if last.originalLnAfter {
            hidden.add(residual)
            if let norm { self.norm(&hidden, norm, epsilon: epsilon) }
        }
        return hidden
    }

    private func run(_ block: BottleneckBlock, _ x: TokenMatrix, adapterResidual: TokenMatrix) -> TokenMatrix {
        var down = RuntimeKernels.project(x, weight: block.downWeight, outFeatures: block.bottleneckSize,
                                   storedTransposed: false)
        if let bias = block.downBias { down.addRowVector(bias) }
        block.activation.apply(&down)
        var up = RuntimeKernels.project(down, weight: block.upWeight, outFeatures: x.cols, storedTransposed: false)
        if let bias = block.upBias { up.addRowVector(bias) }
        if block.scaling != 1 {
            up.values.withUnsafeMutableBufferPointer { v in
                for i in 0..<v.count { v[i] *= block.scaling }
            }
        }
        up.add(adapterResidual)
        return up
    }
}
