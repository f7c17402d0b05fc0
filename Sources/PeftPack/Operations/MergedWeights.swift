import Foundation

/// One tensor of a merged model against the exact merge of the adapters into the base.
public struct MergedTensorDeviation: Encodable, Sendable {
    public var tensor: String
    /// The dtype the merged model stores it in.
    public var dtype: String
    /// RMS(stored − exact) over RMS(correctly rounded − exact): 1 for a correct merge, about 1.4
    /// for one that rounds twice (the change to the dtype, then the sum), larger when the stored
    /// values carry more than the dtype's rounding.
    public var ratio: Double
    /// RMS(stored − exact) over RMS(exact − base): the share of the adapters' change that is wrong.
    public var wrongShare: Double
    /// The largest |stored − exact| in units of one step of the dtype at the exact value plus one
    /// step at the size of the change (what two roundings may cost together).
    public var maxSteps: Double
    /// For a tensor the merged model stores quantized: the share of elements that are not the
    /// exact merge requantized as that model stores it (beyond 2⁻¹⁰ relative, an fp16 scale's step).
    public var mismatchShare: Double?
    public var passed: Bool
}

/// Every tensor the adapters change, read from the merged model and compared with the exact merge.
public struct MergedWeightsReport: Encodable, Sendable {
    public var compared: Int
    /// Changed tensors the merged model does not hold under the base's name (a kept tie), holds in
    /// a shape or dtype no merge gives, or stores in fp64 (beyond the fp32 this check widens to);
    /// the output comparison still covers them.
    public var notCompared: [String]
    /// The tensor with the largest ratio.
    public var worst: MergedTensorDeviation?
    /// The tensors past the allowance, largest ratio first (at most `listed`).
    public var failing: [MergedTensorDeviation]
    public var failingCount: Int
    public var allowedRatio: Double
    public var allowedSteps: Double
    public var allowedMismatchShare: Double
    public var passed: Bool
}

/// Compares a merged model's weights with the merge they should hold.
///
/// The output comparison alone cannot decide a narrow-dtype merge of a large model: every merged
/// bf16 weight is rounded to 8 significant bits and those roundings, summed through 32 layers,
/// move the logits as much as a wrong adapter on one module does (at 8B a merge made with one
/// module's B tripled stayed at 1.5× the output bound). The weights decide it: a correct merge
/// is within its dtype's rounding of the exact one, tensor by tensor, while a wrong one is off by
/// the wrong part of the change wherever that part exceeds a rounding step.
///
/// Allowances, from what correct merges do: peftpack rounds once (ratio 1, steps ≤ 0.5); PEFT
/// rounds the change to the base dtype and then the sum (ratio ≤ 1.4, steps ≤ 1), and DoRA's
/// norm and scale add roundings of their own; fp32 merges differ by summation order, a relative
/// 1e-5 of the change at most. A tensor passes with RMS ratio ≤ `allowedRatio` and every element
/// within `allowedSteps` steps (each plus that fp32 share of the change's RMS).
enum MergedWeights {
    static let allowedRatio = 4.0
    static let allowedSteps = 4.0
    /// A requantized weight may differ from the correct requantization in this share of its
    /// values: PEFT's bitsandbytes merge sums W + ΔW in fp32 arithmetic of its own, so values at a
    /// decision bound take the other code (at most 0.1% of them on the fixtures), and a block
    /// whose absmax rounds one ulp apart moves all its values by that ulp (within the 2⁻¹⁰ match).
    static let allowedMismatchShare = 0.01
    static let quantizedMatch = 0x1p-10
    /// Summation-order differences of an fp32 merge, as a share of the change's RMS.
    static let arithmeticShare = 1e-5
    static let listed = 8
    /// Elements compared at once.
    static let tile = 1 << 20

    static func compare(_ correct: CorrectMerge, merged: Checkpoint, progress: ((Int, Int) -> Void)? = nil) throws -> MergedWeightsReport {
        let weights = correct.weights
        let names = weights.changedNames
        var deviations: [MergedTensorDeviation] = [], notCompared: [String] = []
        for (index, name) in names.enumerated() {
            progress?(index, names.count)
            // A merged model that keeps its head tied holds the head in its embedding: compared
            // there with the head's own merge, a tie kept at a cost shows as that tensor's error.
            let mergedName = merged.info(name) == nil && weights.tie?.head == name ? weights.tie!.embedding : name
            let baseName = weights.sourceName(name)
            let quantized = merged.quantizedTypeName(mergedName) != nil
            guard let stored = merged.info(mergedName), let baseInfo = weights.base.info(baseName), stored.shape == baseInfo.shape,
                  stored.dtype.isFloatingPoint, stored.dtype != .f64, baseInfo.dtype != .f64,
                  stored.dtype == weights.mergedDType(name) || quantized, let exact = try weights.exactMerge(name) else {
                notCompared.append(name)
                continue
            }
            // A requantized weight is held to what requantizing the exact merge (rounded to fp32, as
            // the quantizers take it) gives, not to a float rounding it cannot reach.
            let requantized = quantized ? try merged.decoded?.requantized(mergedName, values: exact.map { Float($0) }) : nil
            deviations.append(try deviation(name, exact: exact, base: weights.base, baseName: baseName, merged: merged, mergedName: mergedName,
                                            dtype: stored.dtype, requantized: requantized))
        }
        progress?(names.count, names.count)
        let ranked = deviations.sorted { $0.ratio > $1.ratio }
        let failing = ranked.filter { !$0.passed }
        return MergedWeightsReport(compared: deviations.count, notCompared: notCompared, worst: ranked.first,
                                   failing: Array(failing.prefix(listed)), failingCount: failing.count,
                                   allowedRatio: allowedRatio, allowedSteps: allowedSteps,
                                   allowedMismatchShare: allowedMismatchShare, passed: failing.isEmpty)
    }

    static func deviation(_ name: String, exact: [Double], base: Checkpoint, baseName: String? = nil, merged: Checkpoint,
                          mergedName: String? = nil, dtype: DType, requantized: [Float]? = nil) throws -> MergedTensorDeviation {
        var storedSquares = 0.0, roundedSquares = 0.0, changeSquares = 0.0, mismatches = 0
        // Per element: |stored − exact| − allowedSteps · (step at exact + step at the change), so
        // the largest over the tensor is compared once the change's RMS is known.
        var largestSteps = 0.0, largestExcess = -Double.infinity
        var baseTile = [Float](repeating: 0, count: tile), mergedTile = [Float](repeating: 0, count: tile)
        var roundedTile = [Float](repeating: 0, count: tile)
        var start = 0
        while start < exact.count {
            let range = start..<min(start + tile, exact.count)
            try baseTile.withUnsafeMutableBufferPointer { try base.widen(baseName ?? name, elements: range, into: UnsafeMutableBufferPointer(rebasing: $0[0..<range.count])) }
            try mergedTile.withUnsafeMutableBufferPointer { try merged.widen(mergedName ?? name, elements: range, into: UnsafeMutableBufferPointer(rebasing: $0[0..<range.count])) }
            if let requantized {
                for offset in 0..<range.count { roundedTile[offset] = requantized[range.lowerBound + offset] }
            } else {
                let correct = HostTensor(correctlyRounding: Array(exact[range]), shape: [range.count], dtype: dtype)
                roundedTile.withUnsafeMutableBufferPointer { correct.widen(elements: 0..<range.count, into: UnsafeMutableBufferPointer(rebasing: $0[0..<range.count])) }
            }
            for offset in 0..<range.count {
                let value = exact[range.lowerBound + offset]
                let error = Double(mergedTile[offset]) - value, change = value - Double(baseTile[offset])
                guard error.isFinite else { largestSteps = .infinity; storedSquares = .infinity; continue }
                let rounding = Double(roundedTile[offset]) - value
                if requantized != nil, abs(Double(mergedTile[offset]) - Double(roundedTile[offset])) > quantizedMatch * abs(Double(roundedTile[offset])) {
                    mismatches += 1
                }
                storedSquares += error * error
                roundedSquares += rounding * rounding
                changeSquares += change * change
                let steps = Self.step(value, dtype) + Self.step(change, dtype)
                largestSteps = max(largestSteps, abs(error) / steps)
                largestExcess = max(largestExcess, abs(error) - allowedSteps * steps)
            }
            start = range.upperBound
        }
        let count = Double(max(exact.count, 1))
        let storedRMS = (storedSquares / count).squareRoot(), roundedRMS = (roundedSquares / count).squareRoot()
        let changeRMS = (changeSquares / count).squareRoot()
        let ratio = storedRMS == 0 ? 0 : roundedRMS > 0 ? storedRMS / roundedRMS : .infinity
        let slack = arithmeticShare * changeRMS
        let wrongShare = changeRMS > 0 ? storedRMS / changeRMS : (storedRMS == 0 ? 0 : .infinity)
        if requantized != nil {
            // Steps of a float dtype mean nothing for blocks of codes: the share of values that
            // are not the correct requantization's decides, with the RMS ratio.
            let mismatchShare = Double(mismatches) / count
            let passed = storedRMS <= allowedRatio * roundedRMS + slack && mismatchShare <= allowedMismatchShare
            return MergedTensorDeviation(tensor: name, dtype: merged.quantizedTypeName(mergedName ?? name) ?? dtype.rawValue, ratio: ratio, wrongShare: wrongShare,
                                         maxSteps: 0, mismatchShare: mismatchShare, passed: passed)
        }
        let passed = storedRMS <= allowedRatio * roundedRMS + slack && largestExcess <= slack
        return MergedTensorDeviation(tensor: name, dtype: dtype.rawValue, ratio: ratio, wrongShare: wrongShare,
                                     maxSteps: largestSteps, passed: passed)
    }

    /// One step (unit in the last place) of `dtype` at the magnitude of `value`; the smallest
    /// subnormal step for values below the normal range, zero included.
    static func step(_ value: Double, _ dtype: DType) -> Double {
        let (fraction, smallestExponent): (Int, Int)
        switch dtype {
        case .bf16: (fraction, smallestExponent) = (7, -126)
        case .f16: (fraction, smallestExponent) = (10, -14)
        case .f32: (fraction, smallestExponent) = (23, -126)
        default: (fraction, smallestExponent) = (52, -1022)
        }
        let magnitude = abs(value)
        let exponent = magnitude.isNormal ? max(Int(magnitude.exponent), smallestExponent) : smallestExponent
        return Double(sign: .plus, exponent: exponent - fraction, significand: 1)
    }
}
