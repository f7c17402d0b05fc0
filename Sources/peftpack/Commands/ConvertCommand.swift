import ArgumentParser
import Foundation
import PeftPack

struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Rewrite an adapter as a plain LoRA: exactly, or at a chosen rank, energy or error.",
        discussion: """
            --to lora takes LoHa, LoKr and LoRA adapters. Their ΔW is low rank by construction \
            (LoHa: at most r², the face-splitting products of its factors; LoKr: the product of its \
            Kronecker sides' ranks), so each module is factored exactly from its own tensors and \
            recompressed as stack does (thin QR, SVD of the small core), never forming ΔW: the \
            optimal rank-R approximation. Without --rank, --energy or --max-error the result is \
            exact (every non-zero singular value). The report gives each module's rank, relative \
            Frobenius error and the share of ‖ΔW‖²_F kept. Scales are folded into B (alpha = rank); \
            whole tensors (modules_to_save) are kept. DoRA and IA3 change W by amounts that depend \
            on W: with --base their true ΔW = W' − W is formed one module at a time and factored by a \
            truncated SVD (DoRA's magnitude included, which PEFT's convert_to_lora drops); they need \
            --rank, --energy or --max-error.

            Examples:
              peftpack convert loha.peftpack --to lora -o lora.peftpack
              peftpack convert lokr.peftpack --to lora --max-error 0.01 -o lora.peftpack --json
              peftpack convert dora.peftpack --to lora --base BASE_DIR --rank 32 -o lora.peftpack
            """)

    enum Target: String, ExpressibleByArgument, CaseIterable {
        case lora
    }

    @Argument(help: "Pack to convert.")
    var pack: String

    @Option(help: "What to convert it to (lora).")
    var to: Target

    @Option(help: "Adapter of the pack to convert (default: its only adapter).")
    var name: String?

    @Option(name: .shortAndLong, help: "Output pack (must not exist unless --force).")
    var output: String

    @Option(help: "The base model folder: DoRA and IA3 change W by amounts that depend on W, so their ΔW is formed from it.")
    var base: String?

    @Option(help: "Every module at this rank (or its exact rank, when lower).")
    var rank: Int?

    @Option(help: "Each module at the smallest rank keeping this share of ‖ΔW‖²_F, in (0, 1].")
    var energy: Double?

    @Option(name: .customLong("max-error"), help: "Each module at the smallest rank whose relative Frobenius error is at most this, in [0, 1).")
    var maxError: Double?

    @OptionGroup var overwrite: OverwriteOptions

    @OptionGroup var outputOptions: OutputOptions

    func validate() throws {
        guard [rank != nil, energy != nil, maxError != nil].filter({ $0 }).count <= 1 else {
            throw ValidationError("give one of --rank, --energy, --max-error")
        }
        if let rank, rank < 1 { throw ValidationError("--rank must be at least 1 (got \(rank))") }
        if let energy, !(energy > 0 && energy <= 1) { throw ValidationError("--energy must be in (0, 1] (got \(energy))") }
        if let maxError, !(maxError >= 0 && maxError < 1) { throw ValidationError("--max-error must be in [0, 1) (got \(maxError))") }
    }

    func run() throws {
        try reportingErrors {
            let rule: Convert.Rule = rank.map { .rank($0) } ?? energy.map { .energy($0) } ?? maxError.map { .maxError($0) } ?? .exact
            var options = Convert.Options(rule: rule)
            options.force = overwrite.force
            options.base = base
            let report = try Convert.run(pack: pack, adapterName: name, output: output, options: options)
            try Self.print(report, json: outputOptions.json, source: " from \(report.from)", factored: " factored")
        }
    }

    /// The report of convert and resize: one line, and the module the rank cost most.
    static func print(_ report: Convert.Report, json: Bool, source: String, factored: String) throws {
        if json {
            try printJSON(report)
            return
        }
        let ranks = report.modules.map(\.rank)
        let rankText = ranks.min().flatMap { low in ranks.max().map { ", ranks \(low)–\($0)" } } ?? ""
        let whole = report.wholeTensors > 0 ? ", \(report.wholeTensors) whole tensors kept" : ""
        Swift.print("wrote \(report.output): lora adapter \(report.adapter)\(source), \(report.modules.count) modules\(rankText)\(whole), \(report.parameters) parameters in \(String(format: "%.2f", report.seconds)) s")
        if let worst = report.modules.max(by: { $0.relativeError < $1.relativeError }) {
            Swift.print("  worst relative Frobenius error \(String(format: "%.3g", worst.relativeError)) (\(worst.target), rank \(worst.rank) of \(worst.factoredRank)\(factored), \(String(format: "%.6f", worst.energyKept)) of the energy kept)")
        }
    }
}
