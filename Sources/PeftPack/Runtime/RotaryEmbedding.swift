import Foundation

/// Rotary position embedding parameters as transformers' modeling_rope_utils reads them.
public struct RopeParameters: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case standard = "default"
        case linear
        case dynamic
        case yarn
        case llama3
        /// Phi-3's LongRoPE ("su" in old configs): per-frequency divisors, short or long by length.
        case longrope
    }

    public var type: Kind = .standard
    public var theta: Double?
    public var factor: Double?
    public var lowFreqFactor: Double?
    public var highFreqFactor: Double?
    public var originalMaxPositionEmbeddings: Int?
    public var attentionFactor: Double?
    public var betaFast: Double?
    public var betaSlow: Double?
    public var mscale: Double?
    public var mscaleAllDim: Double?
    public var truncate: Bool?
    public var partialRotaryFactor: Double?
    /// LongRoPE's divisors of each rotated pair's frequency, for sequences up to and beyond
    /// `originalMaxPositionEmbeddings`.
    public var shortFactor: [Double]?
    public var longFactor: [Double]?

    public init() {}

    /// The leading dims of each head that rotate: int(head_dim · partial_rotary_factor), as
    /// transformers computes it; the rest pass through.
    func rotaryDim(headDim: Int) -> Int {
        Int(Double(headDim) * (partialRotaryFactor ?? 1))
    }

    /// Whether a family may rotate part of a head is its layout's business (DecoderLayout).
    func validate(headDim: Int) throws {
        if let partial = partialRotaryFactor, partial != 1 {
            let dim = rotaryDim(headDim: headDim)
            guard partial > 0, partial < 1, dim >= 2, dim % 2 == 0 else {
                throw RuntimeError.invalidConfig(
                    "partial_rotary_factor \(partial) of head_dim \(headDim) must rotate an even number of dims, at least 2")
            }
        }
        switch type {
        case .standard:
            break
        case .linear, .dynamic:
            guard let factor, factor > 0 else {
                throw RuntimeError.invalidConfig("rope type \(type.rawValue) needs a positive factor")
            }
        case .llama3:
            guard let factor, let lowFreqFactor, let highFreqFactor, originalMaxPositionEmbeddings != nil,
                  factor > 0, lowFreqFactor > 0, highFreqFactor > lowFreqFactor
            else {
                throw RuntimeError.invalidConfig(
                    "rope type llama3 needs factor, low_freq_factor < high_freq_factor and original_max_position_embeddings")
            }
        case .yarn:
            guard originalMaxPositionEmbeddings != nil else {
                throw RuntimeError.invalidConfig("rope type yarn needs original_max_position_embeddings")
            }
        case .longrope:
            try validateLongRope(pairs: rotaryDim(headDim: headDim) / 2)
        }
        if let theta, theta <= 0 { throw RuntimeError.invalidConfig("rope_theta must be positive") }
    }

    private func validateLongRope(pairs: Int) throws {
        guard let original = originalMaxPositionEmbeddings, original > 1 else {
            throw RuntimeError.invalidConfig("rope type longrope needs original_max_position_embeddings above 1")
        }
        for (name, factors) in [("short_factor", shortFactor), ("long_factor", longFactor)] {
            guard let factors else { throw RuntimeError.invalidConfig("rope type longrope needs \(name)") }
            guard factors.count == pairs else {
                throw RuntimeError.invalidConfig("rope \(name) has \(factors.count) entries, the \(2 * pairs) rotated dims need \(pairs)")
            }
            // A zero divisor makes an infinite frequency: NaN in every rotated dim.
            guard factors.allSatisfy({ $0 > 0 }) else { throw RuntimeError.invalidConfig("rope \(name) entries must be positive") }
        }
        if let factor, factor <= 0 { throw RuntimeError.invalidConfig("rope type longrope needs a positive factor") }
    }

    /// The inverse frequency of each rotated pair and the factor cos/sin are multiplied by, for a
    /// forward pass whose largest position is `sequenceLength - 1` (dynamic NTK and LongRoPE
    /// depend on it).
    func inverseFrequencies(headDim: Int, maxPositionEmbeddings: Int, sequenceLength: Int) -> (
        inverse: [Float], attentionScaling: Float
    ) {
        let base = theta ?? 10_000
        let dim = rotaryDim(headDim: headDim)
        // base ** (2i / dim) as torch evaluates it: the exponent is rounded to fp32 first.
        func exponentPower(_ base: Double, _ i: Int) -> Double {
            pow(base, Double(Float(2 * i) / Float(dim)))
        }
        let pairs = dim / 2
        let standard = (0..<pairs).map { 1 / exponentPower(base, $0) }

        switch type {
        case .standard:
            return (standard.map { Float($0) }, 1)
        case .linear:
            return (standard.map { Float($0 / (factor ?? 1)) }, 1)
        case .dynamic:
            let factor = factor ?? 1
            let length = Double(max(sequenceLength, maxPositionEmbeddings))
            let scaledBase = base * pow(factor * length / Double(maxPositionEmbeddings) - (factor - 1),
                                        Double(dim) / Double(dim - 2))
            return ((0..<pairs).map { Float(1 / exponentPower(scaledBase, $0)) }, 1)
        case .llama3:
            return (llama3(standard).map { Float($0) }, 1)
        case .yarn:
            return yarn(base: base, dim: dim, maxPositionEmbeddings: maxPositionEmbeddings)
        case .longrope:
            return longRope(base: base, dim: dim, maxPositionEmbeddings: maxPositionEmbeddings, sequenceLength: sequenceLength)
        }
    }

    /// transformers' `_compute_longrope_parameters` with `dynamic_rope_update`: one factor list for
    /// the whole pass, long when the sequence is longer than the original context; cos and sin
    /// scaled by √(1 + ln s / ln original), s = max_position_embeddings / original unless `factor`.
    private func longRope(base: Double, dim: Int, maxPositionEmbeddings: Int, sequenceLength: Int) -> (
        inverse: [Float], attentionScaling: Float
    ) {
        let original = originalMaxPositionEmbeddings ?? maxPositionEmbeddings
        let scale = factor ?? Double(maxPositionEmbeddings) / Double(original)
        let attention = attentionFactor ?? (scale <= 1 ? 1 : (1 + log(scale) / log(Double(original))).squareRoot())
        let divisors = (sequenceLength > original ? longFactor : shortFactor) ?? []
        // fp32 throughout, as torch: 1 / (factor · base^(2i/dim)).
        let inverse = (0..<dim / 2).map { i -> Float in
            let power = Float(pow(base, Double(Float(2 * i) / Float(dim))))
            return 1 / (Float(divisors[i]) * power)
        }
        return (inverse, Float(attention))
    }

    private func llama3(_ standard: [Double]) -> [Double] {
        let factor = factor ?? 1, low = lowFreqFactor ?? 1, high = highFreqFactor ?? 4
        let oldContext = Double(originalMaxPositionEmbeddings ?? 8192)
        let lowFreqWavelength = oldContext / low
        let highFreqWavelength = oldContext / high
        return standard.map { frequency in
            let wavelength = 2 * Double.pi / frequency
            if wavelength < highFreqWavelength { return frequency }
            if wavelength > lowFreqWavelength { return frequency / factor }
            let smooth = (oldContext / wavelength - low) / (high - low)
            return (1 - smooth) * frequency / factor + smooth * frequency
        }
    }

    private func yarn(base: Double, dim: Int, maxPositionEmbeddings: Int) -> (inverse: [Float], attentionScaling: Float) {
        let original = Double(originalMaxPositionEmbeddings ?? maxPositionEmbeddings)
        let factor = factor ?? Double(maxPositionEmbeddings) / original
        func mscaleOf(_ scale: Double, _ m: Double) -> Double { scale <= 1 ? 1 : 0.1 * m * log(scale) + 1 }
        let attention: Double
        if let attentionFactor {
            attention = attentionFactor
        } else if let mscale, let mscaleAllDim, mscale != 0, mscaleAllDim != 0 {
            attention = mscaleOf(factor, mscale) / mscaleOf(factor, mscaleAllDim)
        } else {
            attention = mscaleOf(factor, 1)
        }
        let betaFast = (betaFast ?? 0) == 0 ? 32 : betaFast!
        let betaSlow = (betaSlow ?? 0) == 0 ? 1 : betaSlow!

        func correctionDim(_ rotations: Double) -> Double {
            Double(dim) * log(original / (rotations * 2 * Double.pi)) / (2 * log(base))
        }
        var low = correctionDim(betaFast), high = correctionDim(betaSlow)
        if truncate ?? true {
            low = floor(low)
            high = ceil(high)
        }
        low = max(low, 0)
        high = min(high, Double(dim - 1))
        if low == high { high += 0.001 }

        let inverse = (0..<dim / 2).map { i -> Float in
            let power = pow(base, Double(Float(2 * i) / Float(dim)))
            let extrapolation = 1 / power
            let interpolation = 1 / (factor * power)
            let ramp = min(max((Double(i) - low) / (high - low), 0), 1)
            let extrapolationWeight = 1 - ramp
            return Float(interpolation * (1 - extrapolationWeight) + extrapolation * extrapolationWeight)
        }
        return (inverse, Float(attention))
    }
}

extension RopeParameters {
    enum Key: String {
        case ropeType = "rope_type", type, ropeTheta = "rope_theta", factor
        case lowFreqFactor = "low_freq_factor", highFreqFactor = "high_freq_factor"
        case originalMaxPositionEmbeddings = "original_max_position_embeddings"
        case attentionFactor = "attention_factor", betaFast = "beta_fast", betaSlow = "beta_slow"
        case mscale, mscaleAllDim = "mscale_all_dim", truncate
        case partialRotaryFactor = "partial_rotary_factor"
        case shortFactor = "short_factor", longFactor = "long_factor"
    }

    /// The `rope_parameters` (5.x) or `rope_scaling` (4.x) dictionary of a config.json.
    init(fields c: ConfigFields<Key>) throws {
        let typeName = try c.string(.ropeType) ?? c.string(.type) ?? "default"
        guard let kind = Kind(rawValue: typeName) else {
            throw RuntimeError.invalidConfig("rope type \(typeName) is not supported")
        }
        type = kind
        theta = try c.double(.ropeTheta)
        factor = try c.double(.factor)
        lowFreqFactor = try c.double(.lowFreqFactor)
        highFreqFactor = try c.double(.highFreqFactor)
        originalMaxPositionEmbeddings = try c.int(.originalMaxPositionEmbeddings)
        attentionFactor = try c.double(.attentionFactor)
        betaFast = try c.double(.betaFast)
        betaSlow = try c.double(.betaSlow)
        mscale = try c.double(.mscale)
        mscaleAllDim = try c.double(.mscaleAllDim)
        truncate = try c.bool(.truncate)
        partialRotaryFactor = try c.double(.partialRotaryFactor)
        shortFactor = try c.doubles(.shortFactor)
        longFactor = try c.doubles(.longFactor)
    }
}

/// The cos/sin tables of one forward pass, one row per position.
struct RotaryTables {
    let headDim: Int
    /// Half the rotated dims of a head (headDim / 2 unless partial_rotary_factor < 1).
    let halfDim: Int
    let cos: [Float]
    let sin: [Float]

    init(parameters: RopeParameters, headDim: Int, maxPositionEmbeddings: Int, positions: Int) {
        let (inverse, scaling) = parameters.inverseFrequencies(
            headDim: headDim, maxPositionEmbeddings: maxPositionEmbeddings, sequenceLength: positions)
        self.headDim = headDim
        halfDim = inverse.count
        var cos = [Float](repeating: 0, count: positions * halfDim)
        var sin = cos
        for position in 0..<positions {
            for i in 0..<halfDim {
                // position · inv_freq is an fp32 product in transformers; cos/sin are taken of it.
                let angle = Double(Float(position) * inverse[i])
                cos[position * halfDim + i] = Float(Foundation.cos(angle)) * scaling
                sin[position * halfDim + i] = Float(Foundation.sin(angle)) * scaling
            }
        }
        self.cos = cos
        self.sin = sin
    }

    /// Rotates every head of `x` (rows: tokens, columns: heads × headDim) in place; row r sits at
    /// position `positionOfRow(r)`. The two halves of a head's rotated dims form the pairs
    /// (rotate_half); dims past them pass through.
    func apply(to x: inout TokenMatrix, heads: Int, positionOfRow: (Int) -> Int) {
        precondition(x.cols == heads * headDim)
        let cols = x.cols
        x.values.withUnsafeMutableBufferPointer { v in
            for row in 0..<x.rows {
                let table = positionOfRow(row) * halfDim
                for head in 0..<heads {
                    let base = row * cols + head * headDim
                    for i in 0..<halfDim {
                        let first = v[base + i], second = v[base + i + halfDim]
                        let c = cos[table + i], s = sin[table + i]
                        v[base + i] = first * c - second * s
                        v[base + i + halfDim] = second * c + first * s
                    }
                }
            }
        }
    }
}
