import ArgumentParser
import Foundation
import PeftPack

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Run the base model with a pack's adapters in Swift and compare the output.",
        discussion: """
            Compares against a reference file (--reference: input_ids I64 [batch, seq] plus the expected \
            output), a merged model (--merged, on random or given input ids), or another pack \
            (--against). A comparison passes when max|ours − expected| ≤ atol + rtol · max|expected|. \
            The defaults (atol 1e-5, rtol 1e-4) allow fp32 summation-order differences between \
            implementations (observed ≤ 1e-6 relative) and catch any real adapter change.

            A merged model stored in bf16 or fp16 cannot be that close: each merged weight is rounded \
            to the dtype. Against such a model verify also measures, on the same input, the bound B a \
            correct merge reaches (the exact merge rounded once per tensor to the merged model's dtypes, \
            run and compared with the adapter applied in fp32), and by default accepts up to 4·B on top \
            of the fp32 tolerance (a merge that rounds twice, as PEFT's does, stays within about 2·B). \
            The report gives B and the error's ratio to it. Giving --atol or --rtol replaces the default \
            with exactly that tolerance.

            A *ForSequenceClassification base gives its head's logits [batch, num_labels]: BERT's \
            classifier on the pooler output, a decoder's score at each sequence's last token that is \
            not pad_token_id, as transformers computes them.

            The base is checked against what the pack recorded of the base it was made for, as merge \
            checks it (see peftpack help merge): --trust-base compares names, dtypes and shapes only, \
            --skip-base-check turns differences into warnings.

            Weights stay in the checkpoint's dtype and are widened one matrix at a time during \
            each layer-by-layer pass: memory is about one matrix and the activations, not the \
            model (about 1 GB with Llama-3.1-8B's matrices). Against --merged or \
            --against the report names the first layer whose hidden states differ beyond the \
            tolerance. Inputs are checked and memory planned before the first pass: a missing or \
            truncated shard, or an input whose activations would not fit, is refused (exit 2). \
            On a terminal a progress line shows the layer and tokens per second.

            Exit codes: 0 every comparison passed, 1 a numerical mismatch, 2 usage or input error.

            Examples:
              peftpack verify lora.peftpack --base llama/ --reference llama_lora.ref.safetensors
              peftpack verify lora.peftpack --base llama/ --merged merged/ --input-ids 2,32 --seed 1
            """)

    @Argument(help: "The pack whose adapters are applied.")
    var pack: String

    @Option(help: "Base model folder (config.json + safetensors).")
    var base: String

    @Option(help: "Reference safetensors with input_ids and the expected output.")
    var reference: String?

    @Option(help: "Which output tensor of the reference to compare (default: output_adapter, or the only one).")
    var key: String?

    @Option(help: "A merged model folder to compare with.")
    var merged: String?

    @Option(help: "Another pack whose adapters give the expected output.")
    var against: String?

    @Option(name: .customLong("name"), help: "Apply only these adapters of the pack (repeatable, each once; default all).")
    var names: [String] = []

    @Option(name: .customLong("input-ids"), help: "Random input shape BATCH,SEQ for --merged/--against (default 2,16).", transform: OptionValue.inputShape)
    var inputShape = InputShape(batch: 2, tokens: 16)

    @Option(help: "Seed of the random input ids.")
    var seed: UInt64 = 0

    @Option(help: "Absolute tolerance (default 1e-5; against a bf16/fp16 merged model, plus 4× the rounding bound).")
    var atol: Double?

    @Option(help: "Tolerance relative to the expected output's largest magnitude (default 1e-4).")
    var rtol: Double?

    @OptionGroup var baseCheck: BaseCheckOptions

    @OptionGroup var outputOptions: OutputOptions

    func validate() throws {
        guard reference != nil || merged != nil || against != nil else {
            throw ValidationError("give at least one of --reference, --merged, --against")
        }
        guard (atol ?? 0) >= 0, (rtol ?? 0) >= 0 else { throw ValidationError("tolerances must be non-negative") }
    }

    /// nil when neither tolerance is given: the library's defaults, derived from a merged model's dtype.
    var explicitTolerance: Verify.Tolerance? {
        atol == nil && rtol == nil ? nil : .init(absolute: atol ?? Verify.Tolerance.fp32.absolute, relative: rtol ?? Verify.Tolerance.fp32.relative)
    }

    /// "max abs 0.0128 is 1.1× the bound 0.0117 a correct BF16 merge reaches (allowed: 4× + fp32 tolerance)".
    static func describe(_ rounding: MergedRoundingBound, comparison: Verify.Comparison, explicit: Bool) -> String {
        let allowed = explicit ? "allowed: --atol/--rtol, max abs \(String(format: "%.3g", comparison.allowedAbsError))"
            : "allowed: \(String(format: "%g", rounding.multiple))× + fp32 tolerance = \(String(format: "%.3g", comparison.allowedAbsError))"
        return "max abs \(String(format: "%.3g", comparison.maxAbsError)) is \(String(format: "%.1f", rounding.ratio))× the bound \(String(format: "%.3g", rounding.bound)) a correct \(rounding.dtype.lowercased()) merge reaches on this input (\(allowed))"
    }

    /// "weights: 56 changed tensors within the exact merge's bf16 rounding (worst ... 1.4×)" or the
    /// tensors that are not.
    static func describe(_ weights: MergedWeightsReport, decides: Bool) -> String {
        func show(_ tensor: MergedTensorDeviation) -> String {
            let detail = tensor.mismatchShare.map { "\(String(format: "%.3g", $0 * 100))% of values not the exact merge requantized" }
                ?? "max \(String(format: "%.1f", tensor.maxSteps)) steps"
            return "\(tensor.tensor) (\(tensor.dtype.lowercased()): \(String(format: "%.1f", tensor.ratio))× a correct rounding's RMS error, \(String(format: "%.3g", tensor.wrongShare * 100))% of the change wrong, \(detail))"
        }
        let skipped = weights.notCompared.isEmpty ? "" : "; \(weights.notCompared.count) not compared (\(weights.notCompared.prefix(3).joined(separator: ", "))\(weights.notCompared.count > 3 ? ", …" : ""))"
        let quantized = weights.worst?.mismatchShare != nil || weights.failing.contains { $0.mismatchShare != nil }
        let allowed = "allowed \(String(format: "%g", weights.allowedRatio))× and \(String(format: "%g", weights.allowedSteps)) steps\(quantized ? ", requantized weights \(String(format: "%g", weights.allowedMismatchShare * 100))% of values off" : "")\(decides ? "" : "; not deciding, --atol/--rtol given")"
        guard weights.passed else {
            let listed = weights.failing.map(show).joined(separator: "; ")
            let more = weights.failingCount > weights.failing.count ? "; and \(weights.failingCount - weights.failing.count) more" : ""
            return "weights: \(weights.failingCount) of \(weights.compared) changed tensors are not the exact merge rounded to their dtype: \(listed)\(more) (\(allowed))\(skipped)"
        }
        let worst = weights.worst.map { ", worst \(show($0))" } ?? ""
        return "weights: \(weights.compared) changed tensors within their dtype's rounding of the exact merge\(worst) (\(allowed))\(skipped)"
    }

    func run() throws {
        var passed = true
        try reportingErrors {
            var targets: [Verify.Target] = []
            if let reference { targets.append(.reference(path: reference, key: key)) }
            if let merged { targets.append(.merged(folder: merged)) }
            if let against { targets.append(.pack(path: against)) }
            let progress = ProgressLine(label: "verify", enabled: !outputOptions.quiet)
            let rate = PassRate()
            let report = try baseCheck.hinting {
                try Verify.run(pack: pack, base: base, adapterNames: names, targets: targets, inputShape: (inputShape.batch, inputShape.tokens),
                               seed: seed, tolerance: explicitTolerance, baseCheck: baseCheck.level) {
                    progress.update(done: $0.layer, total: $0.layers,
                                    detail: $0.tokens == 0 ? "\($0.unit) of the \($0.pass) compared" : "\($0.unit) of the \($0.pass) pass, \(rate.describe($0))")
                }
            }
            progress.finish()
            baseCheck.printWarnings(report.baseCheck)
            passed = report.passed
            if outputOptions.json {
                try printJSON(report)
            } else {
                print("verify \(report.pack) [\(report.adapters.joined(separator: ", "))] on \(report.base), input \(Shape.describe(report.inputShape))")
                for comparison in report.comparisons {
                    var line = "  \(comparison.passed ? "PASS" : "FAIL") vs \(comparison.against): max abs \(String(format: "%.3g", comparison.maxAbsError)), max rel \(String(format: "%.3g", comparison.maxRelError)), mean abs \(String(format: "%.3g", comparison.meanAbsError))"
                    if let top1 = comparison.top1Agreement { line += ", top-1 \(String(format: "%.4f", top1))" }
                    if let kl = comparison.klDivergence { line += ", KL \(String(format: "%.3g", kl))" }
                    print(line)
                    if let rounding = comparison.rounding { print("    " + Self.describe(rounding, comparison: comparison, explicit: explicitTolerance != nil)) }
                    if let weights = comparison.weights { print("    " + Self.describe(weights, decides: explicitTolerance == nil)) }
                    if let layer = comparison.firstDivergentLayer, let errors = comparison.layerErrors {
                        print("    hidden states first differ beyond the tolerance after layer \(layer) of \(errors.count) (relative error \(String(format: "%.3g", errors[layer])))")
                    }
                }
            }
        }
        if !passed { throw ExitCode(1) }
    }
}

/// Tokens per second of the pass in progress, counting a layer over all tokens as a share of
/// the pass.
private final class PassRate {
    private var start = Date()

    func describe(_ progress: VerifyProgress) -> String {
        if progress.layer == 0 { start = Date() }
        let elapsed = Date().timeIntervalSince(start)
        guard progress.layer > 0, elapsed > 0 else { return "starting" }
        let tokens = Double(progress.tokens) * Double(progress.layer) / Double(max(progress.layers, 1))
        return String(format: "%.0f tokens/s", tokens / elapsed)
    }
}
