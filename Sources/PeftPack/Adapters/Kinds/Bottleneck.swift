/// A bottleneck MLP inserted after a sub-layer (AdapterHub Houlsby / Pfeiffer, spec/FORMAT.md §9.7).
public struct BottleneckModule: Sendable, Equatable {
    public var layer: Int
    public var position: BottleneckPosition

    public init(layer: Int, position: BottleneckPosition) {
        self.layer = layer
        self.position = position
    }
}

/// Where a bottleneck adapter sits inside a transformer layer.
public enum BottleneckPosition: String, Codable, Sendable {
    /// After the attention block's output projection (Houlsby's first adapter).
    case afterAttention = "after_attention"
    /// After the feed-forward block's output projection (Houlsby's second, Pfeiffer's only).
    case afterFeedForward = "after_feed_forward"
}

extension BottleneckModule {
    public static let rules = KindRules(
        requiredRoles: [TensorRole.downWeight, TensorRole.upWeight], optionalRoles: [TensorRole.downBias, TensorRole.upBias],
        mergeable: false, addedComputation: "bottleneck MLPs between sub-layers", stackable: true, exports: [.adapterhub])
}

// MARK: Run time (not mergeable: it adds computation)

extension AdapterSet {
    mutating func addBottleneck(_ module: AdapterModule, _ site: BottleneckModule, settings: AdapterSettings,
                                _ source: AdapterTensors) throws {
        try source.checkRoles(of: module)
        guard (0..<model.config.numLayers).contains(site.layer) else {
            throw source.fail("bottleneck module \(module.target) needs a layer in 0..<\(model.config.numLayers)")
        }
        let placement = try BottleneckPlacement(settings: settings, source: source)
        let hidden = model.config.hiddenSize
        let down = try source.require(TensorRole.downWeight, of: module)
        guard down.shape.count == 2, down.shape[0] > 0 else {
            throw source.fail("tensor \(down.name) must be a [bottleneck, hidden] matrix")
        }
        let size = down.shape[0]
        try source.check(down, [size, hidden])
        let up = try source.require(TensorRole.upWeight, of: module)
        try source.check(up, [hidden, size])
        let downBias = try source.optional(TensorRole.downBias, of: module)
        if let downBias { try source.check(downBias, [size]) }
        let upBias = try source.optional(TensorRole.upBias, of: module)
        if let upBias { try source.check(upBias, [hidden]) }
        let block = BottleneckBlock(
            downWeight: down.values, downBias: downBias?.values, upWeight: up.values, upBias: upBias?.values,
            bottleneckSize: size, activation: placement.activation, scaling: placement.scaling,
            originalLnBefore: placement.originalLnBefore, originalLnAfter: placement.originalLnAfter,
            residualBeforeLn: placement.residualBeforeLn)
        bottlenecks[BottleneckSite(layer: site.layer, position: site.position), default: []].append(block)
    }
}

/// Where a bottleneck block sits relative to the sub-block's residual and layer norm, with
/// AdapterHub's defaults: SeqBnConfig ("pfeiffer") and DoubleSeqBnConfig ("houlsby") set all
/// flags; explicit settings override them.
struct BottleneckPlacement {
    let originalLnBefore: Bool
    let originalLnAfter: Bool
    let residualBeforeLn: Bool
    let activation: ActivationFunction
    let scaling: Float

    init(settings: AdapterSettings, source: AdapterTensors) throws {
        var lnBefore = false, lnAfter = true, residualBeforeLn = true
        var nonLinearity: String?
        switch settings.bottleneckArchitecture?.lowercased() {
        case "pfeiffer", "seq_bn", "seqbn":
            (lnBefore, nonLinearity) = (true, "relu")
        case "houlsby", "double_seq_bn", "doubleseqbn":
            (lnBefore, nonLinearity) = (false, "swish")
        case nil:
            break
        case let other?:
            throw source.fail("bottleneck architecture \(other) is not supported")
        }
        originalLnBefore = settings.originalLnBefore ?? lnBefore
        originalLnAfter = settings.originalLnAfter ?? lnAfter
        self.residualBeforeLn = settings.residualBeforeLn ?? residualBeforeLn
        guard let name = settings.nonLinearity ?? nonLinearity else {
            throw source.fail("bottleneck adapter has no non_linearity")
        }
        do {
            activation = try ActivationFunction(name: name)
        } catch {
            throw source.fail("non_linearity \(name) is not supported")
        }
        scaling = Float(settings.scaling ?? 1)
    }
}
