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
            or pytorch_adapter.bin), an MLX adapter folder as mlx_lm.lora saves it (adapter_config.json \
            with fine_tune_type lora or dora and lora_parameters + adapters.safetensors; with --base each \
            tensor is checked where mlx-lm's load_adapters puts it), a GGUF LoRA adapter, or an existing \
            pack. A PEFT folder saved from a model with several \
            adapters (save_pretrained after add_adapter) holds "default" at its root and the others in \
            sub-folders named after them: every one is imported, named by its folder (the root's by \
            --name, default "default"); sub-folders that are not such adapters (Trainer checkpoints) are \
            left out with a note. Adapters made for different bases cannot share a pack.

            Pickled .bin files are read without executing anything: only tensor rebuilds are accepted.

            A PEFT adapter is read as PEFT 0.21 loads it: target_modules (a list of names or \
            .-suffixes, a regex string, or "all-linear"), exclude_modules, layers_to_transform / \
            layers_pattern and modules_to_save decide which modules get adapter layers, and a saved \
            tensor outside them (which PEFT drops without a word) is refused, naming the tensor and \
            the rule. --drop-unloaded leaves such tensors out instead, as PEFT does, and lists them.

            Examples:
              peftpack import lora/ -o lora.peftpack --base llama/
              peftpack import lora/ prefix/ -o both.peftpack --name task-lora --name task-prefix

            A tensor holding NaN or ±Inf is refused, naming it and how many of its elements are; \
            --allow-nonfinite keeps it and lists it in the report (nonFiniteTensors in --json). merge \
            still refuses to write a NaN or ±Inf the base did not have.

            An AdapterHub folder saved from a model with a prediction head (head_config.json, \
            pytorch_model_head.bin or model_head.safetensors beside the adapter) is refused: a pack \
            does not carry heads yet, and load_adapter would put that head over the model's own. \
            With --base, a head equal to the base's own (the untouched lm_head adapters saves for a \
            causal LM) is left out with a note. --without-head imports the adapter alone and lists \
            the head files left out (leftOutHeadFiles in --json).
            """)

    @Argument(help: "Adapter folders or packs to put into the pack.")
    var sources: [String]

    @Option(name: .shortAndLong, help: "The pack to write (must not exist unless --force).")
    var output: String

    @Option(help: "Base model folder: check every adapter's shapes against it and record its fingerprint.")
    var base: String?

    @Option(name: .customLong("name"), help: "Adapter name, once per SRC in order (default: PEFT 'default', AdapterHub's own name).")
    var names: [String] = []

    @Option(help: "Compression effort 1–22: up to 9 tries fast candidates, 10 and above also zstd at that level.")
    var level: Int32 = 3

    @Option(name: .customLong("metadata"), help: "User metadata KEY=VALUE (repeatable).", transform: OptionValue.metadataEntry)
    var metadata: [MetadataEntry] = []

    @Flag(name: .customLong("allow-nonfinite"), help: "Keep adapter tensors holding NaN or ±Inf (listed in the report) instead of refusing them.")
    var allowNonFinite = false
    @Flag(help: "Leave out saved tensors PEFT would not load (outside target_modules etc.) instead of refusing; each is listed.")
    var dropUnloaded = false
    @Flag(help: "Import an AdapterHub adapter saved with a prediction head without that head (the head files are listed).")
    var withoutHead = false
    @OptionGroup var overwrite: OverwriteOptions

    @OptionGroup var outputOptions: OutputOptions

    func validate() throws {
        guard !sources.isEmpty else { throw ValidationError("give at least one SRC") }
        guard names.isEmpty || names.count == sources.count else {
            throw ValidationError("--name is given \(names.count) times for \(sources.count) sources; give one per source or none")
        }
        guard (1...22).contains(level) else { throw ValidationError("--level must be 1…22") }
    }

    func run() throws {
        try reportingErrors {
            let sourceList = sources.enumerated().map { PackImport.Source(path: $0.element, name: names.isEmpty ? nil : names[$0.offset]) }
            // A key given twice keeps its last value, as a later flag overrides an earlier one.
            let user = Dictionary(metadata.map { ($0.key, $0.value) }, uniquingKeysWith: { $1 })
            let progress = ProgressLine(label: "import", enabled: !outputOptions.quiet)
            let report: PackImport.Report
            do {
                report = try PackImport.run(sources: sourceList, output: output, baseFolder: base, level: level,
                                            userMetadata: user, allowNonFinite: allowNonFinite,
                                            dropUnloaded: dropUnloaded, withoutHead: withoutHead, force: overwrite.force) { progress.update(done: $0, total: $1) }
            } catch let error as NonFiniteError where error.kind == .inputTensor {
                throw UsageError(error.description + "; nothing was written (pass --allow-nonfinite to keep such tensors)")
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
            for tensor in report.nonFiniteTensors {
                printWarning("\(tensor.file): tensor \(tensor.tensor) holds \(NonFiniteCount(nan: tensor.nan, infinite: tensor.infinite).phrase) of its \(tensor.elements) elements; kept (--allow-nonfinite)")
            }
            for item in report.droppedTensors where !outputOptions.json {
                printWarning("\(item.file): left out tensor \(item.tensor): PEFT would not load it: \(item.reason)")
            }
            for folder in report.leftOut { printWarning("left out \(folder)") }
            for file in report.leftOutHeadFiles where withoutHead && !outputOptions.json {
                printWarning("left out \(file): prediction head (--without-head); an export loads with the model's own head")
            }
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
