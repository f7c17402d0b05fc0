import Foundation

/// `peftpack verify`: runs the base model with a pack's adapters applied at run time and compares
/// the output with a reference file, a merged model, or another pack.
public enum Verify {
    public struct Tolerance: Sendable {
        public var absolute: Double
        public var relative: Double
        public init(absolute: Double, relative: Double) {
            self.absolute = absolute
            self.relative = relative
        }

        /// fp32 summation-order differences between implementations (observed ≤ 1e-6 relative).
        public static let fp32 = Tolerance(absolute: 1e-5, relative: 1e-4)
    }

    public struct Comparison: Encodable {
        public var against: String
        public var shape: [Int]
        public var maxAbsError: Double
        /// Max absolute error divided by the reference's largest magnitude.
        public var maxRelError: Double
        public var meanAbsError: Double
        public var referenceScale: Double
        /// For logits: share of positions whose arg-max agrees, and mean KL(reference ‖ ours).
        public var top1Agreement: Double?
        public var klDivergence: Double?
        /// The largest max abs error this comparison accepts.
        public var allowedAbsError: Double
        /// Against a merged model stored in bf16/fp16: what a correct merge reaches on this input.
        public var rounding: MergedRoundingBound?
        public var passed: Bool
        /// Against a merged model or another pack: after each layer, the max abs difference of the
        /// two passes' hidden states over the expected side's largest magnitude.
        public var layerErrors: [Double]? = nil
        /// The first layer (from 0) whose hidden states differ by more than the comparison allows
        /// there, when one does: where the two models part.
        public var firstDivergentLayer: Int? = nil
        /// Against a merged model: its weights against the exact merge of the adapters, tensor by
        /// tensor (nil when no merge can hold the adapters).
        public var weights: MergedWeightsReport? = nil
    }

    public struct Report: Encodable {
        public var pack: String
        public var base: String
        public var adapters: [String]
        public var inputShape: [Int]
        public var comparisons: [Comparison]
        public var passed: Bool
        public var atol: Double
        public var rtol: Double
        public var baseCheck: BaseBinding.Report
    }

    public enum Target {
        case reference(path: String, key: String?)
        case merged(folder: String)
        case pack(path: String)
    }

    public static func loadModel(_ folder: String) throws -> (TransformerModel, Checkpoint) {
        let checkpoint = try Checkpoint(path: folder)
        let config = try checkpoint.modelConfig()
        return (try TransformerModel.load(config: config, weights: checkpoint), checkpoint)
    }

    static func adapterSet(_ selection: SelectedAdapters, model: TransformerModel) throws -> AdapterSet {
        try AdapterSet(adapters: selection.adapters, model: model, tensor: selection.packs[0].reader.readTensor)
    }

    /// `tolerance` nil: fp32 defaults, and against a merged model stored in bf16/fp16 also
    /// `MergedTolerance.multiple` times the bound a correct merge in that dtype reaches on the same
    /// input. Given: exactly that tolerance (the bound is still measured and reported).
    /// Plan (adapters chosen, the base checked against every pack's record, the model loaded,
    /// every target's inputs opened and their memory planned, then the base's content checked) →
    /// compute (one comparison per target).
    public static func run(pack: String, base: String, adapterNames: [String], targets: [Target],
                           inputShape: (batch: Int, tokens: Int), seed: UInt64, tolerance given: Tolerance? = nil,
                           isLogits: Bool? = nil, baseCheck: BaseCheckLevel = .content,
                           fullLogitsBytes: Int = Verify.fullLogitsBytes,
                           progress: ((VerifyProgress) -> Void)? = nil) throws -> Report {
        let binding = BaseBinding(base: try BaseModel(folder: base), level: baseCheck)
        let selection = try SelectedAdapters(pack: pack, names: adapterNames)
        try bind(selection, to: binding)
        var others: [String: SelectedAdapters] = [:]
        for case .pack(let other) in targets {
            others[other] = try SelectedAdapters(pack: other, names: [])
            try bind(others[other]!, to: binding)
        }
        let (model, _) = try loadModel(base)
        let run = Comparing(model: model, adapters: try adapterSet(selection, model: model), names: selection.adapters.map(\.name),
                            base: base, pack: pack, random: (inputShape, seed), given: given, logits: isLogits ?? model.outputsLogits,
                            fullLogitsBytes: fullLogitsBytes, progress: progress)
        // Every input opened and checked and the memory planned before the base's content is read
        // for its check and before the first pass.
        let planned = try targets.map { try run.plan($0, otherAdapters: { try adapterSet(others[$0]!, model: model) }) }
        try binding.checkRemainingContent()
        var comparisons: [Comparison] = []
        var shownShape = [inputShape.batch, inputShape.tokens]
        for target in planned {
            switch target {
            case .reference(let reference):
                comparisons.append(try run.againstReference(reference))
                shownShape = [reference.rows.count, reference.rows[0].count]
            case .merged(let merged):
                comparisons.append(try run.againstMerged(merged))
            case .pack(let other, let adapters):
                comparisons.append(try run.againstPack(other, adapters: adapters))
            }
        }
        return Report(pack: pack, base: base, adapters: run.names, inputShape: shownShape, comparisons: comparisons,
                      passed: comparisons.allSatisfy(\.passed), atol: run.tolerance.absolute, rtol: run.tolerance.relative,
                      baseCheck: binding.report)
    }

    /// Verify's compute step: the base model with the adapters, run on each target's input and
    /// compared with what the target gives.
    struct Comparing {
        let model: TransformerModel
        let adapters: AdapterSet
        let names: [String]
        let base: String
        let pack: String
        let random: (shape: (batch: Int, tokens: Int), seed: UInt64)
        let given: Tolerance?
        let logits: Bool
        let fullLogitsBytes: Int
        let progress: ((VerifyProgress) -> Void)?

        var tolerance: Tolerance { given ?? .fp32 }

        /// Whether a comparison of `passes` passes on the random input compares a causal LM's
        /// logits over vocabulary tiles: when holding them whole would take more than
        /// `fullLogitsBytes`.
        func tilesLogits(passes: Int) -> Bool {
            guard logits, model.sequenceClassifier == nil, model.config.family.outputHead != nil else { return false }
            let rows = Double(random.shape.batch) * Double(random.shape.tokens + adapters.promptLength)
            return Double(passes) * rows * Double(model.config.vocabSize) * 4 > Double(fullLogitsBytes)
        }

        /// The runtime's parallelism is OpenBLAS's: worth its threads only for large passes.
        func forward(_ model: TransformerModel, _ rows: [[Int]], _ adapters: AdapterSet?, _ label: String) throws -> FloatTensor {
            guard case .whole(let output) = try traced(model, rows, adapters, label, keepingLayers: false, tiling: false).output else {
                preconditionFailure("a pass without tiling gives its whole output")
            }
            return output
        }

        /// A pass's output (its logits left to vocabulary tiles when `tiling`) and, when
        /// `keepingLayers`, the hidden states after each layer.
        func traced(_ model: TransformerModel, _ rows: [[Int]], _ adapters: AdapterSet?, _ label: String,
                    keepingLayers: Bool = true, tiling: Bool) throws -> (output: PassOutput, layers: [TokenMatrix]) {
            let report = progress.map { report in
                { (done: Int, layers: Int) in report(VerifyProgress(pass: label, layer: done, layers: layers, tokens: rows.count * (rows.first?.count ?? 0))) }
            }
            var layers: [TokenMatrix] = []
            let observe: ((Int, TokenMatrix) -> Void)? = keepingLayers ? { layers.append($1) } : nil
            let output = try BLAS.withThreads(forFLOPs: model.forwardFLOPs(batch: rows.count, tokens: rows.first?.count ?? 0)) { () throws -> PassOutput in
                tiling ? try model.forwardToHead(inputIds: rows, adapters: adapters, progress: report, observeLayer: observe)
                    : .whole(try model.forward(inputIds: rows, adapters: adapters, progress: report, observeLayer: observe))
            }
            return (output, layers)
        }

        func randomRows() -> [[Int]] {
            randomInput(random.shape, vocabulary: model.config.vocabSize, seed: random.seed)
        }

        /// Against a reference file's output on its own input ids.
        func againstReference(_ reference: PlannedReference) throws -> Comparison {
            let expected = try reference.file.tensor(reference.key)
            let output = try forward(model, reference.rows, adapters, "adapters")
            return try compare(output, FloatTensor(shape: expected.shape, values: expected.floats()),
                               label: "\(reference.file.path):\(reference.key)", logits: logits, tolerance: tolerance)
        }

        /// Against a merged model folder: its weights against the exact merge, then its output on
        /// random ids, allowing for its dtype's rounding.
        func againstMerged(_ target: PlannedMerged) throws -> Comparison {
            let correctMerge = try MergedTolerance.correctMerge(base: base, pack: pack, adapterNames: names, merged: target.checkpoint)
            let weights = try correctMerge.map { correct in
                try MergedWeights.compare(correct, merged: target.checkpoint) { done, total in
                    progress?(VerifyProgress(pass: "merged weights", layer: done, layers: total, tokens: 0, unit: "tensors"))
                }
            }
            let rows = randomRows()
            let tiling = tilesLogits(passes: 3)
            let ours = try traced(model, rows, adapters, "adapters", tiling: tiling)
            var correct: (dtype: String, pass: (output: PassOutput, layers: [TokenMatrix]))?
            if let narrow = MergedTolerance.roundingLabel(of: target.checkpoint), let correctMerge {
                correct = (narrow, try traced(try correctMerge.roundedModel(), rows, nil, "rounded merge", tiling: tiling))
            }
            let expected = try traced(target.model, rows, nil, "merged", tiling: tiling)
            let multiple = given == nil ? MergedTolerance.multiple : 0
            var (comparison, bound) = try compareOutputs(ours.output, expected.output, rounded: correct?.pass.output,
                                                         label: target.folder, multiple: multiple)
            (comparison.layerErrors, comparison.firstDivergentLayer) = layerDivergence(
                ours: ours.layers, expected: expected.layers, bound: correct.map { ($0.pass.layers, multiple) }, tolerance: tolerance)
            if let correct, let bound {
                comparison.rounding = MergedRoundingBound(dtype: correct.dtype, bound: bound, multiple: MergedTolerance.multiple,
                                                          ratio: bound > 0 ? comparison.maxAbsError / bound : .infinity)
            }
            // Given tolerances decide alone (the weights are still compared and reported).
            comparison.weights = weights
            if given == nil, let weights, !weights.passed { comparison.passed = false }
            return comparison
        }

        /// Against another pack's adapters on the same base and random ids.
        func againstPack(_ other: String, adapters otherAdapters: AdapterSet) throws -> Comparison {
            let rows = randomRows()
            let tiling = tilesLogits(passes: 2)
            let expected = try traced(model, rows, otherAdapters, "other pack", tiling: tiling)
            let ours = try traced(model, rows, adapters, "adapters", tiling: tiling)
            var (comparison, _) = try compareOutputs(ours.output, expected.output, rounded: nil, label: other, multiple: 0)
            (comparison.layerErrors, comparison.firstDivergentLayer) = layerDivergence(
                ours: ours.layers, expected: expected.layers, bound: nil, tolerance: tolerance)
            return comparison
        }
    }

    /// Verify keeps a comparison's logits whole up to this many bytes (all its passes together)
    /// and compares larger ones over vocabulary tiles.
    public static let fullLogitsBytes = 1 << 30

    /// Checks the base against what the pack recorded for the chosen adapters.
    static func bind(_ selection: SelectedAdapters, to binding: BaseBinding) throws {
        let pack = selection.packs[0]
        try binding.add(pack.document.base, targets: selection.adapters.flatMap(binding.base.targets), all: pack.document.adapters,
                        shapes: pack.shape, file: pack.path)
    }

    static func defaultKey(_ file: SafetensorsFile) throws -> String {
        if file.info("output_adapter") != nil { return "output_adapter" }
        let outputs = file.names.filter { $0 != "input_ids" }
        guard outputs.count == 1 else {
            throw AmbiguousReferenceError(file: file.path, outputs: outputs)
        }
        return outputs[0]
    }

    /// Token ids drawn from a fixed generator so `--seed` reproduces a run exactly.
    static func randomInput(_ shape: (batch: Int, tokens: Int), vocabulary: Int, seed: UInt64) -> [[Int]] {
        var state = seed &+ 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        return (0..<shape.batch).map { _ in (0..<shape.tokens).map { _ in Int(next() % UInt64(vocabulary)) } }
    }

    static func maxAbsDifference(_ a: FloatTensor, _ b: FloatTensor) -> Double {
        maxAbsDifference(a.values, b.values)
    }

    static func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Double {
        zip(a, b).reduce(0.0) { largest, pair in
            let error = abs(Double(pair.0) - Double(pair.1))
            return max(largest, error.isNaN ? .infinity : error)
        }
    }

    /// Relative errors of the hidden states after each layer, and the first layer past what the
    /// comparison allows there: the tolerance at that layer's scale, plus, against a narrow merged
    /// model, `bound.multiple` times the correctly rounded merge's own difference at that layer
    /// (the output's rule, applied to every layer).
    static func layerDivergence(ours: [TokenMatrix], expected: [TokenMatrix], bound: (layers: [TokenMatrix], multiple: Double)?,
                                tolerance: Tolerance) -> ([Double]?, Int?) {
        guard !ours.isEmpty, ours.count == expected.count else { return (nil, nil) }
        var errors: [Double] = [], first: Int?
        for layer in ours.indices {
            let error = maxAbsDifference(ours[layer].values, expected[layer].values)
            let scale = expected[layer].values.reduce(0.0) { max($0, abs(Double($1))) }
            let rounding = bound.map { $0.multiple * maxAbsDifference(ours[layer].values, $0.layers[layer].values) } ?? 0
            errors.append(scale > 0 ? error / scale : error)
            if first == nil, error > tolerance.absolute + tolerance.relative * scale + rounding { first = layer }
        }
        return (errors, first)
    }

    /// `allowance`: added to the tolerance's max abs error (the rounding a merged dtype forces).
    static func compare(_ output: FloatTensor, _ expected: FloatTensor, label: String, logits: Bool, tolerance: Tolerance,
                        allowance: Double = 0) throws -> Comparison {
        guard output.shape == expected.shape else {
            throw InputError(file: label, problem: "output shape \(Shape.describe(output.shape)) does not match the reference's \(Shape.describe(expected.shape))")
        }
        var maxAbs = 0.0, sumAbs = 0.0, scale = 0.0
        for (ours, theirs) in zip(output.values, expected.values) {
            let error = abs(Double(ours) - Double(theirs))
            maxAbs = max(maxAbs, error.isNaN ? .infinity : error)
            sumAbs += error
            scale = max(scale, abs(Double(theirs)))
        }
        var top1: Double?, kl: Double?
        if logits, let width = output.shape.last, width > 0 {
            let positions = output.values.count / width
            var agree = 0
            var divergence = 0.0
            for position in 0..<positions {
                let ours = output.values[(position * width)..<((position + 1) * width)]
                let theirs = expected.values[(position * width)..<((position + 1) * width)]
                if ours.indices.max(by: { ours[$0] < ours[$1] }) == theirs.indices.max(by: { theirs[$0] < theirs[$1] }) { agree += 1 }
                divergence += klDivergence(reference: Array(theirs), candidate: Array(ours))
            }
            top1 = Double(agree) / Double(max(positions, 1))
            kl = divergence / Double(max(positions, 1))
        }
        return Comparison(measured: (maxAbs, sumAbs, output.values.count, scale), label: label, shape: output.shape,
                          top1: top1, kl: kl, tolerance: tolerance, allowance: allowance)
    }

    /// KL(P‖Q) of the softmax distributions of two logit rows, in fp64.
    static func klDivergence(reference: [Float], candidate: [Float]) -> Double {
        func logSoftmax(_ row: [Float]) -> [Double] {
            let top = Double(row.max() ?? 0)
            let total = row.reduce(0.0) { $0 + exp(Double($1) - top) }
            return row.map { Double($0) - top - log(total) }
        }
        let p = logSoftmax(reference), q = logSoftmax(candidate)
        return zip(p, q).reduce(0) { $0 + exp($1.0) * ($1.0 - $1.1) }
    }
}

/// A reference file holding several expected outputs and no `output_adapter`, compared without
/// naming which one.
public struct AmbiguousReferenceError: UserFacingError {
    public var file: String
    public var outputs: [String]

    public var description: String { "\(file): holds several outputs (\(outputs.joined(separator: ", ")))" }
}
