import Foundation

/// What `Verify.compare` reports about two logit tensors, accumulated a block of vocabulary
/// columns at a time: the error sums and maxima, each row's arg-max on both sides, and each
/// row's KL(expected ‖ ours) by an online log-sum-exp (the running maximum rescales the sums when
/// a later block holds a larger logit), all in fp64.
struct LogitStatistics {
    private(set) var maxAbs = 0.0, sumAbs = 0.0, scale = 0.0, count = 0
    /// Max |ours − rounded| against the correctly rounded merge, when one is given.
    private(set) var boundMaxAbs = 0.0
    private var oursBest: [(value: Float, index: Int)]
    private var expectedBest: [(value: Float, index: Int)]
    private var expectedSum: [LogSumExp]
    private var oursSum: [LogSumExp]
    /// Σ exp(e − max e) · (e − o) per row: KL's cross term before normalizing.
    private var cross: [Double]

    struct LogSumExp {
        var maximum = -Double.infinity
        var total = 0.0
        var value: Double { maximum + log(total) }
    }

    init(rows: Int) {
        oursBest = Array(repeating: (-.infinity, -1), count: rows)
        expectedBest = oursBest
        expectedSum = Array(repeating: LogSumExp(), count: rows)
        oursSum = expectedSum
        cross = Array(repeating: 0, count: rows)
    }

    /// Adds the logits of every row for vocabulary entries `columns` ([rows, columns.count]).
    mutating func add(ours: TokenMatrix, expected: TokenMatrix, rounded: TokenMatrix?, columns: Range<Int>) {
        for row in 0..<ours.rows {
            let base = row * ours.cols
            let o = ours.values[base..<(base + ours.cols)], e = expected.values[base..<(base + ours.cols)]
            for (offset, (mine, theirs)) in zip(o, e).enumerated() {
                let error = abs(Double(mine) - Double(theirs))
                maxAbs = max(maxAbs, error.isNaN ? .infinity : error)
                sumAbs += error
                scale = max(scale, abs(Double(theirs)))
                if mine > oursBest[row].value { oursBest[row] = (mine, columns.lowerBound + offset) }
                if theirs > expectedBest[row].value { expectedBest[row] = (theirs, columns.lowerBound + offset) }
                if let rounded {
                    let deviation = abs(Double(mine) - Double(rounded.values[base + offset]))
                    boundMaxAbs = max(boundMaxAbs, deviation.isNaN ? .infinity : deviation)
                }
            }
            count += o.count
            let shift = Self.raise(&expectedSum[row], to: e)
            cross[row] *= shift
            for (mine, theirs) in zip(o, e) {
                cross[row] += exp(Double(theirs) - expectedSum[row].maximum) * (Double(theirs) - Double(mine))
            }
            _ = Self.raise(&oursSum[row], to: o)
        }
    }

    /// Moves a row's running maximum to cover `values` and adds their exponentials; returns the
    /// factor the sums taken before were rescaled by.
    private static func raise(_ sum: inout LogSumExp, to values: ArraySlice<Float>) -> Double {
        let top = Double(values.max() ?? -.infinity)
        var shift = 1.0
        if top > sum.maximum {
            shift = sum.total == 0 ? 0 : exp(sum.maximum - top)
            sum.total *= shift
            sum.maximum = top
        }
        for value in values { sum.total += exp(Double(value) - sum.maximum) }
        return shift
    }

    /// Share of rows whose arg-max agrees.
    var top1: Double {
        Double(zip(oursBest, expectedBest).filter { $0.index == $1.index }.count) / Double(max(oursBest.count, 1))
    }

    /// Mean over rows of KL(expected ‖ ours) = Σ p·(e − o) − LSE(e) + LSE(o).
    var klDivergence: Double {
        let rows = cross.indices.map { cross[$0] / expectedSum[$0].total - expectedSum[$0].value + oursSum[$0].value }
        return rows.reduce(0, +) / Double(max(rows.count, 1))
    }
}

extension Verify.Comparing {
    /// Two passes' outputs compared, whole or over vocabulary tiles, with the max deviation of
    /// ours from the correctly rounded merge's output (`rounded`) when given; `multiple` times
    /// that deviation is added to the allowed error.
    func compareOutputs(_ ours: PassOutput, _ expected: PassOutput, rounded: PassOutput?, label: String,
                        multiple: Double) throws -> (Verify.Comparison, bound: Double?) {
        switch (ours, expected, rounded) {
        case (.whole(let mine), .whole(let theirs), nil):
            return (try Verify.compare(mine, theirs, label: label, logits: logits, tolerance: tolerance), nil)
        case (.whole(let mine), .whole(let theirs), .whole(let correct)?):
            let bound = Verify.maxAbsDifference(mine, correct)
            return (try Verify.compare(mine, theirs, label: label, logits: logits, tolerance: tolerance, allowance: multiple * bound), bound)
        case (.tiles(let mine), .tiles(let theirs), nil):
            return try Verify.compareTiles(mine, theirs, rounded: nil, label: label, tolerance: tolerance, multiple: multiple)
        case (.tiles(let mine), .tiles(let theirs), .tiles(let correct)?):
            return try Verify.compareTiles(mine, theirs, rounded: correct, label: label, tolerance: tolerance, multiple: multiple)
        default:
            preconditionFailure("the passes of one comparison are all tiled or all whole")
        }
    }
}

extension Verify {
    /// Columns of the vocabulary compared at once: every row's logits of a block stay within
    /// 16 Mi floats (64 MB) per pass.
    static func logitColumns(rows: Int) -> Int { max(1, (16 << 20) / max(rows, 1)) }

    /// `compare` for logits computed over tiles of the vocabulary, with the max deviation from
    /// the correctly rounded merge (`rounded`) measured in the same sweep; `multiple` times it is
    /// added to the allowed error.
    static func compareTiles(_ ours: VocabularyLogits, _ expected: VocabularyLogits, rounded: VocabularyLogits?, label: String,
                             tolerance: Tolerance, multiple: Double) throws -> (Comparison, bound: Double?) {
        guard ours.shape == expected.shape else {
            throw InputError(file: label, problem: "output shape \(Shape.describe(ours.shape)) does not match the reference's \(Shape.describe(expected.shape))")
        }
        var statistics = LogitStatistics(rows: ours.hidden.rows)
        let step = logitColumns(rows: ours.hidden.rows)
        for start in stride(from: 0, to: ours.vocabulary, by: step) {
            let columns = start..<min(start + step, ours.vocabulary)
            statistics.add(ours: try ours.tile(columns), expected: try expected.tile(columns), rounded: try rounded?.tile(columns), columns: columns)
        }
        let bound = rounded == nil ? nil : statistics.boundMaxAbs
        let comparison = Comparison(measured: (statistics.maxAbs, statistics.sumAbs, statistics.count, statistics.scale),
                                    label: label, shape: ours.shape, top1: statistics.top1, kl: statistics.klDivergence,
                                    tolerance: tolerance, allowance: multiple * (bound ?? 0))
        return (comparison, bound)
    }
}

extension Verify.Comparison {
    /// A comparison from its measured errors: passed when the max abs error is within the
    /// tolerance at the expected output's scale plus `allowance`.
    init(measured: (maxAbs: Double, sumAbs: Double, count: Int, scale: Double), label: String, shape: [Int],
         top1: Double?, kl: Double?, tolerance: Verify.Tolerance, allowance: Double) {
        let (maxAbs, scale) = (measured.maxAbs, measured.scale)
        let allowed = tolerance.absolute + tolerance.relative * scale + allowance
        self.init(against: label, shape: shape, maxAbsError: maxAbs, maxRelError: scale > 0 ? maxAbs / scale : maxAbs,
                  meanAbsError: measured.sumAbs / Double(max(measured.count, 1)), referenceScale: scale,
                  top1Agreement: top1, klDivergence: kl, allowedAbsError: allowed, rounding: nil, passed: maxAbs <= allowed)
    }
}
