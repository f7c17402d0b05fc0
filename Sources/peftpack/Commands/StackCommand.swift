import ArgumentParser
import Foundation
import PeftPack

struct StackCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stack",
        abstract: "Combine adapters of one base into one adapter, exactly or recompressed.",
        discussion: """
            LoRA family: exact concatenation by default, ΔW = Σ wᵢ·sᵢ·BᵢAᵢ = [w₁s₁B₁ … wₖsₖBₖ]·[A₁; …; Aₖ] \
            with rank Σrᵢ and the scales folded into B (alpha = rank), so the result loads in PEFT as an \
            ordinary LoRA. With --rank or --energy each module's sum is recompressed from the factors \
            alone (thin QR of the stacked B and Aᵀ, SVD of the small core): the optimal rank-R \
            approximation of the exact sum, never a dense out×in matrix. IA3 vectors multiply \
            (v = Π vᵢ^wᵢ); dense deltas add; a whole-tensor replacement may come from one input only. \
            DoRA adapters, different kinds and different bases are refused, as are weights that are all 0.

            Examples:
              peftpack stack a.peftpack b.peftpack -o ab.peftpack
              peftpack stack a.peftpack b.peftpack:task --weight 0.7 --weight 0.3 --rank 32 -o mix.peftpack
            """)

    @Argument(help: "Packs to stack, each PACK or PACK:ADAPTER (default: every adapter of the pack).")
    var packs: [String]

    @Option(name: .shortAndLong, help: "Output pack (must not exist unless --force).")
    var output: String

    @Option(name: .customLong("weight"), parsing: .unconditionalSingleValue, help: "Weight per PACK, in order (default 1 each; a finite number).")
    var weights: [Double] = []

    @Option(help: "Recompress every module to this rank.")
    var rank: Int?

    @Option(help: "Recompress every module to the smallest rank keeping this share of ‖ΔW‖²_F, in (0, 1].")
    var energy: Double?

    @Option(help: "Name of the stacked adapter.")
    var name: String = "stacked"

    @OptionGroup var overwrite: OverwriteOptions

    @OptionGroup var outputOptions: OutputOptions

    func validate() throws {
        guard !packs.isEmpty else { throw ValidationError("give at least one PACK") }
        try validateWeights(weights, packs: packs.count)
        guard rank == nil || energy == nil else { throw ValidationError("give --rank or --energy, not both") }
        if let rank, rank < 1 { throw ValidationError("--rank must be at least 1 (got \(rank))") }
        if let energy, !(energy > 0 && energy <= 1) { throw ValidationError("--energy must be in (0, 1] (got \(energy))") }
    }

    func run() throws {
        try reportingErrors {
            let inputs = MergeInput.parse(packs, weights: weights)
            let recompression: Stack.Recompression = rank.map { .rank($0) } ?? energy.map { .energy($0) } ?? .none
            var options = Stack.Options(recompression: recompression, name: name)
            options.force = overwrite.force
            let report = try Stack.run(inputs: inputs, output: output, options: options)
            if outputOptions.json {
                try printJSON(report)
                return
            }
            let ranks = report.modules.map(\.rank)
            let rankText = report.kind != "lora" ? "" : ranks.min().flatMap { low in ranks.max().map { " (ranks \(low)–\($0))" } } ?? ""
            print("wrote \(report.output): \(report.kind) adapter \(report.adapter) from \(report.inputs.count) inputs, \(report.modules.count) modules\(rankText), \(report.parameters) parameters in \(String(format: "%.2f", report.seconds)) s")
            if let worst = report.modules.map(\.relativeError).max(), worst > 0 {
                print("  recompression: worst relative Frobenius error \(String(format: "%.3g", worst)) against the exact sum")
            }
        }
    }
}
