import ArgumentParser
import Foundation
import PeftPack

struct ExtractCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "extract",
        abstract: "SVD-compress a full fine-tune's weight delta into a LoRA pack.",
        discussion: """
            For every 2-D weight that differs, ΔW = W_ft − W_base (fp32) is factored as B·A by a \
            randomized truncated SVD (Gaussian sketch, oversampling, power iterations with QR; \
            --exact for a full SVD), with √S on each factor and alpha = rank, so the adapter applies \
            exactly B·A. The rank is fixed (--rank, default 16), the smallest keeping a share of the \
            squared Frobenius norm (--energy 0.9), the smallest reaching a relative error \
            (--max-error 0.1), or chosen across all modules to remove the most error per parameter \
            within a total size (--budget 2M parameters, or 8MB of fp32 factors); --max-rank caps it. \
            The reported relative error ‖ΔW − B·A‖/‖ΔW‖ is computed in fp64 from the discarded \
            singular values, and --max-error chooses by it.

            Embeddings and the output head (--embeddings) and 1-D tensors such as norms and biases \
            (--other) are stored whole by default, because low rank would lose them. Unchanged \
            tensors are skipped. --include/--exclude take shell patterns matched against tensor \
            names (e.g. 'model.layers.*.mlp.*').

            When base and fine-tune tie lm_head to the embedding (tie_word_embeddings), the \
            fine-tuned embedding is the head too, so the pack changes lm_head as well (the same \
            stored tensor, or the embedding's factors transposed with --embeddings lora).

            Checkpoints saved by different transformers versions may differ by tensors that are no \
            parameters: buffers the model recomputes (BERT's embeddings.position_ids, rotary \
            inv_freq, GPT-2's attn.bias and attn.masked_bias, as the base's architecture lists them) \
            and a copy of a tied head. One side storing such a tensor and the other not is accepted: \
            the tensor is left out, listed in the report ("left out", JSON "ignored"). A parameter \
            stored on one side only is refused, naming it.

            Two identical checkpoints are an input error (exit 2): there is nothing to extract.

            Examples:
              peftpack extract --base llama/ --finetuned llama-ft/ -o ft.peftpack --rank 32
              peftpack extract --base llama/ --finetuned llama-ft/ -o ft.peftpack --energy 0.9 --max-rank 128
              peftpack extract --base llama/ --finetuned llama-ft/ -o ft.peftpack --budget 20MB
            """)

    @Option(help: "Base model folder.")
    var base: String

    @Option(help: "Fully fine-tuned model folder (same architecture).")
    var finetuned: String

    @Option(name: .shortAndLong, help: "Output pack (must not exist unless --force).")
    var output: String

    @Option(help: "Rank of every module.")
    var rank: Int?

    @Option(help: "Keep at least this share of each delta's squared Frobenius norm, in (0, 1].")
    var energy: Double?

    @Option(name: .customLong("max-error"), help: "Smallest rank with relative Frobenius error at most this, in [0, 1).")
    var maxError: Double?

    @Option(help: "Total size of the pack: parameters (2000000, 2M) or bytes of fp32 tensors (8MB, 1GiB).", transform: OptionValue.parameterBudget)
    var budget: Int?

    @Option(name: .customLong("max-rank"), help: "Cap on any module's rank.")
    var maxRank: Int?

    @Option(help: "Only tensors matching one of these shell patterns (repeatable).")
    var include: [String] = []

    @Option(help: "Leave out tensors matching these shell patterns (repeatable).")
    var exclude: [String] = []

    @Option(help: "How to store embeddings and the output head: as LoRA factors, whole, or not at all.")
    var embeddings: Extract.EmbeddingPolicy = .full

    @Option(help: "How to store 1-D and other non-linear tensors: whole, as a dense delta, or not at all.")
    var other: Extract.OtherPolicy = .full

    @Flag(help: "Full SVD (sgesdd) instead of the randomized one.")
    var exact = false

    @Option(help: "Extra sketch columns of the randomized SVD.")
    var oversample: Int = 8

    @Option(name: .customLong("power-iterations"), help: "Power iterations of the randomized SVD.")
    var powerIterations: Int = 2

    @Option(help: "Seed of the Gaussian test matrices.")
    var seed: UInt64 = 0

    @Option(help: "Adapter name in the pack.")
    var name: String = "extracted"

    @OptionGroup var overwrite: OverwriteOptions

    @OptionGroup var outputOptions: OutputOptions

    func validate() throws {
        let rules = [rank != nil, energy != nil, maxError != nil, budget != nil].filter { $0 }.count
        guard rules <= 1 else { throw ValidationError("give at most one of --rank, --energy, --max-error, --budget") }
        if let rank, rank < 1 { throw ValidationError("--rank must be at least 1 (got \(rank))") }
        if let energy, !(energy > 0 && energy <= 1) { throw ValidationError("--energy must be in (0, 1] (got \(energy))") }
        if let maxError, !(maxError >= 0 && maxError < 1) { throw ValidationError("--max-error must be in [0, 1) (got \(maxError))") }
        if let budget, budget <= 0 { throw ValidationError("--budget must be positive") }
        if let maxRank, maxRank < 1 { throw ValidationError("--max-rank must be at least 1 (got \(maxRank))") }
        guard oversample >= 0 else { throw ValidationError("--oversample must not be negative") }
        guard powerIterations >= 0 else { throw ValidationError("--power-iterations must not be negative") }
    }

    var rankRule: Extract.RankRule {
        if let energy { return .energy(energy) }
        if let maxError { return .maxError(maxError) }
        if let budget { return .budget(parameters: budget) }
        return .fixed(rank ?? 16)
    }

    func run() throws {
        try reportingErrors {
            var options = Extract.Options(rule: rankRule, maxRank: maxRank, include: include, exclude: exclude,
                                          embeddings: embeddings, other: other,
                                          exact: exact, oversample: oversample, powerIterations: powerIterations, seed: seed, name: name)
            options.force = overwrite.force
            let progress = ProgressLine(label: "extract", enabled: !outputOptions.quiet)
            var report = try Extract.run(base: base, finetuned: finetuned, output: output, options: options) { progress.update(done: $0, total: $1) }
            progress.finish()
            report.fullTensors = report.fullTensors.map(\.withFlagHint)
            if outputOptions.json {
                try printJSON(report)
                return
            }
            let ranks = report.modules.map(\.rank)
            let rankText = ranks.min().flatMap { low in ranks.max().map { low == $0 ? "rank \(low)" : "ranks \(low)–\($0)" } } ?? ""
            print("wrote \(report.output): \(report.modules.count) low-rank modules (\(rankText)), \(report.fullTensors.count) tensors stored whole, \(report.parameters) parameters; \(formatBytes(report.packBytes)) vs \(formatBytes(report.deltaBytes)) of changed tensors (\(String(format: "%.3f", Double(report.packBytes) / Double(max(report.deltaBytes, 1))))) in \(String(format: "%.2f", report.seconds)) s")
            for module in report.modules {
                print("  \(module.tensor) \(Shape.describe(module.shape)): rank \(module.rank), energy kept \(String(format: "%.4f", module.energyKept)), relative error \(String(format: "%.3g", module.relativeError)) (\(module.method))")
            }
            for full in report.fullTensors { print("  \(full.tensor): stored whole (\(full.mode)): \(full.reason)") }
            for ignored in report.ignored { print("  left out: \(ignored.tensor): \(ignored.reason)") }
            if !report.skipped.isEmpty { print("  skipped: \(report.skipped.count) changed tensors (excluded, skip policy, or rank 0 under the budget)") }
        }
    }
}
