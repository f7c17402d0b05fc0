import ArgumentParser
import Foundation
import PeftPack

struct ResizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resize",
        abstract: "Bring a LoRA to a smaller rank, optimally per module, from its own factors.",
        discussion: """
            Each module's ΔW = s·B·A is recompressed from the factors alone (thin QR of B and Aᵀ, SVD \
            of the small core), never forming the out×in matrix: the best rank-R approximation \
            (Eckart–Young), with its relative Frobenius error in the report. The rank is fixed \
            (--rank), or per module by a rule on ΔW's singular values s₁ ≥ s₂ ≥ …: --energy E keeps \
            the smallest rank holding that share of ‖ΔW‖²_F; kohya's resize_lora.py criteria: \
            --sv-ratio Q keeps every sᵢ > s₁/Q, --sv-cumulative C the first rank whose Σsᵢ share \
            reaches C, --sv-fro F the first whose Frobenius share reaches F (its square of the \
            energy); with one of these, --rank is the largest rank allowed, as kohya's --new_rank. \
            Scales are folded into B (alpha = rank).

            Examples:
              peftpack resize lora.peftpack --rank 16 -o lora16.peftpack
              peftpack resize lora.peftpack --sv-fro 0.9 --rank 32 -o small.peftpack --json
            """)

    @Argument(help: "Pack with the LoRA to resize.")
    var pack: String

    @Option(help: "Adapter of the pack (default: its only adapter).")
    var name: String?

    @Option(name: .shortAndLong, help: "Output pack (must not exist unless --force).")
    var output: String

    @Option(help: "Every module at this rank; with a criterion, the largest rank it may pick.")
    var rank: Int?

    @Option(help: "Each module at the smallest rank keeping this share of ‖ΔW‖²_F, in (0, 1].")
    var energy: Double?

    @Option(name: .customLong("sv-ratio"), help: "kohya sv_ratio: keep singular values above the largest divided by this (> 1).")
    var svRatio: Double?

    @Option(name: .customLong("sv-cumulative"), help: "kohya sv_cumulative: the first rank whose share of Σs reaches this, in (0, 1].")
    var svCumulative: Double?

    @Option(name: .customLong("sv-fro"), help: "kohya sv_fro: the first rank whose Frobenius share reaches this, in (0, 1].")
    var svFro: Double?

    @OptionGroup var overwrite: OverwriteOptions

    @OptionGroup var outputOptions: OutputOptions

    func validate() throws {
        let criteria = [energy != nil, svRatio != nil, svCumulative != nil, svFro != nil].filter { $0 }.count
        guard criteria <= 1 else { throw ValidationError("give at most one of --energy, --sv-ratio, --sv-cumulative, --sv-fro") }
        guard criteria == 1 || rank != nil else { throw ValidationError("give --rank or a criterion (--energy, --sv-ratio, --sv-cumulative, --sv-fro)") }
        guard energy == nil || rank == nil else { throw ValidationError("--energy picks the rank itself; give --rank or --energy") }
        if let rank, rank < 1 { throw ValidationError("--rank must be at least 1 (got \(rank))") }
        if let energy, !(energy > 0 && energy <= 1) { throw ValidationError("--energy must be in (0, 1] (got \(energy))") }
        if let svRatio, !(svRatio > 1 && svRatio.isFinite) { throw ValidationError("--sv-ratio must be a number above 1 (got \(svRatio))") }
        for (flag, value) in [("--sv-cumulative", svCumulative), ("--sv-fro", svFro)] {
            if let value, !(value > 0 && value <= 1) { throw ValidationError("\(flag) must be in (0, 1] (got \(value))") }
        }
    }

    func run() throws {
        try reportingErrors {
            let criterion: Stack.SingularValueCriterion? = svRatio.map { .ratio($0) } ?? svCumulative.map { .cumulative($0) } ?? svFro.map { .frobenius($0) }
            let rule: Convert.Rule = criterion.map { .singularValues($0, cap: rank) } ?? energy.map { .energy($0) } ?? .rank(rank!)
            var options = Convert.Options(rule: rule)
            options.force = overwrite.force
            options.loraOnly = true
            let report = try Convert.run(pack: pack, adapterName: name, output: output, options: options)
            try ConvertCommand.print(report, json: outputOptions.json, source: "", factored: "")
        }
    }
}
