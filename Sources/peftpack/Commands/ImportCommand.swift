import ArgumentParser
import Foundation
import PeftPack

struct ImportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Pack PEFT or AdapterHub adapters (or other packs) into one .peftpack file.",
        discussion: """
            Each SRC is a PEFT adapter folder (adapter_config.json + adapter_model.safetensors or \
            adapter_model.bin), an AdapterHub adapter folder (adapter_config.json + adapter.safetensors \
            or pytorch_adapter.bin), or an existing pack. A PEFT folder saved from a model with several \
            adapters (save_pretrained after add_adapter) holds "default" at its root and the others in \
            sub-folders named after them: every one is imported, named by its folder (the root's by \
            --name, default "default"); sub-folders that are not such adapters (Trainer checkpoints) are \
            left out with a note. Adapters made for different bases cannot share a pack.

            Pickled .bin files are read without executing anything: only tensor rebuilds are accepted.

            Examples:
              peftpack import lora/ -o lora.peftpack --base llama/
              peftpack import lora/ prefix/ -o both.peftpack --name task-lora --name task-prefix
            """)

    @Argument(help: "Adapter folders or packs to put into the pack.")
    var sources: [String]

    @Option(name: .shortAndLong, help: "The pack to write.")
    var output: String

    @Option(help: "Base model folder: check every adapter's shapes against it and record its fingerprint.")
    var base: String?

    @Option(name: .customLong("name"), help: "Adapter name, once per SRC in order (default: PEFT 'default', AdapterHub's own name).")
    var names: [String] = []

    @Option(help: "Compression effort 1–22: up to 9 tries fast candidates, 10 and above also zstd at that level.")
    var level: Int32 = 3

    @Option(name: .customLong("metadata"), help: "User metadata KEY=VALUE (repeatable).")
    var metadata: [String] = []

    @OptionGroup var outputOptions: OutputOptions

    func validate() throws {
        guard !sources.isEmpty else { throw ValidationError("give at least one SRC") }
        guard names.isEmpty || names.count == sources.count else {
            throw ValidationError("--name is given \(names.count) times for \(sources.count) sources; give one per source or none")
        }
        guard (1...22).contains(level) else { throw ValidationError("--level must be 1…22") }
        for item in metadata where !item.contains("=") { throw ValidationError("--metadata takes KEY=VALUE, got \(item)") }
    }

    func run() throws {
        try reportingErrors {
            let sourceList = sources.enumerated().map { PackImport.Source(path: $0.element, name: names.isEmpty ? nil : names[$0.offset]) }
            var user: [String: String] = [:]
            for item in metadata {
                let parts = item.split(separator: "=", maxSplits: 1)
                user[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
            }
            let progress = ProgressLine(label: "import", enabled: !outputOptions.quiet)
            let report: PackImport.Report
            do {
                report = try PackImport.run(sources: sourceList, output: output, baseFolder: base, level: level,
                                            userMetadata: user) { progress.update(done: $0, total: $1) }
            } catch let mismatch as BaseMismatchError {
                switch (mismatch.kind, base) {
                case (.differentBases, nil):
                    throw UsageError("\(mismatch.description); if they share one base, give it with --base to check them against it")
                case (.differentBases, _):
                    throw mismatch
                default:
                    throw UsageError("\(mismatch.description); import it without --base to keep the base it was made for")
                }
            }
            progress.finish()
            for folder in report.leftOut { printWarning("left out \(folder)") }
            for warning in report.warnings { printWarning(warning) }
            if outputOptions.json {
                try printJSON(report)
            } else {
                print("wrote \(report.output): \(report.adapters.count) adapter(s) [\(report.adapters.joined(separator: ", "))], \(report.tensors) tensors, \(formatBytes(report.rawBytes)) raw → \(formatBytes(report.storedBytes)) (\(String(format: "%.3f", Double(report.storedBytes) / Double(max(report.rawBytes, 1)))))\(report.baseChecked ? ", shapes checked against the base" : "")")
            }
        }
    }
}

func formatBytes(_ count: Int) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"]
    var value = Double(count)
    var unit = 0
    while value >= 1000 && unit < units.count - 1 {
        value /= 1000
        unit += 1
    }
    return unit == 0 ? "\(count) B" : String(format: "%.2f %@", value, units[unit])
}
