import ArgumentParser
import Foundation
import PeftPack

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show what a pack, PEFT or AdapterHub folder, or safetensors checkpoint holds.",
        discussion: """
            Without --verify only the header is read, so inspecting a large pack is instant. \
            --verify checks every checksum and decodes every chunk. A model folder also gets its \
            architecture, layers, dtypes, parameter count (as transformers' num_parameters()), \
            tie_word_embeddings as transformers resolves it, the stored output head and its shards.

            Examples:
              peftpack inspect lora.peftpack
              peftpack inspect lora.peftpack --tensors --verify --json
            """)

    @Argument(help: "A .peftpack file, an adapter folder, or a safetensors file or model folder.")
    var path: String

    @Flag(help: "List every tensor: name, dtype, shape, stored bytes and codec.")
    var tensors = false

    @Flag(help: "Check every checksum and decode every chunk (packs).")
    var verify = false

    @Flag(help: "With --tensors: add the XXH3-64 of each tensor's decoded bytes.")
    var hashes = false

    @OptionGroup var outputOptions: OutputOptions

    func run() throws {
        try reportingErrors {
            let report = try Inspect.run(path: path, listTensors: tensors || hashes, verify: verify, hashes: hashes)
            if outputOptions.json {
                try printJSON(report)
            } else {
                printText(report)
            }
        }
    }

    func printText(_ report: Inspect.Report) {
        print("\(report.path): \(report.kind.rawValue)\(report.formatVersion.map { " format \($0)" } ?? "")")
        if let creator = report.creator { print("  created by \(creator.tool) \(creator.version)") }
        if let base = report.base {
            var parts: [String] = []
            if let value = base.architecture ?? base.modelType { parts.append(value) }
            if let value = base.nameOrPath { parts.append("(\(value))") }
            if let value = base.hiddenSize { parts.append("hidden \(value)") }
            if let value = base.numLayers { parts.append("\(value) layers") }
            if let value = base.numAttentionHeads { parts.append("\(value) heads") }
            if let value = base.numKeyValueHeads, value != base.numAttentionHeads { parts.append("\(value) kv heads") }
            if let value = base.vocabSize { parts.append("vocab \(value)") }
            if let value = base.fingerprint { parts.append("fingerprint \(value)") }
            if !parts.isEmpty { print("  base: \(parts.joined(separator: ", "))") }
        }
        for adapter in report.adapters {
            var parts = ["\(adapter.kind)\(adapter.dora == true ? " (DoRA)" : "")", "\(adapter.modules) modules"]
            if let ranks = adapter.ranks { parts.append("rank \(ranks.map(String.init).joined(separator: "/"))") }
            if let scales = adapter.scales { parts.append("scale \(scales.map { String(format: "%.4g", $0) }.joined(separator: "/"))") }
            if let tokens = adapter.virtualTokens { parts.append("\(tokens) virtual tokens") }
            if let layers = adapter.layers { parts.append("\(layers) layers") }
            if let bottleneck = adapter.bottleneck { parts.append(bottleneck) }
            if let full = adapter.fullTensors { parts.append("\(full) full tensors") }
            if let source = adapter.source { parts.append("from \(source)") }
            print("  adapter \(adapter.name): \(parts.joined(separator: ", "))")
            let shown = adapter.targets.prefix(4).joined(separator: ", ")
            print("    targets: \(shown)\(adapter.targets.count > 4 ? ", … (\(adapter.targets.count))" : "")")
            for (target, rows) in (adapter.replacedRows ?? [:]).sorted(by: { $0.key < $1.key }) {
                print("    rows of \(target) replaced (trainable tokens): \(rows.map(String.init).joined(separator: ", "))")
            }
        }
        print("  \(report.tensorCount) tensors, \(formatBytes(report.rawBytes)) raw, \(formatBytes(report.storedBytes)) stored (ratio \(String(format: "%.3f", report.ratio)))")
        if let metadata = report.userMetadata, !metadata.isEmpty {
            print("  user metadata: " + metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", "))
        }
        if let metadata = report.metadata, !metadata.isEmpty {
            print("  metadata: " + metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", "))
        }
        if let model = report.model { print("  model: " + Self.describe(model)) }
        if let quantization = report.model?.quantization {
            let kinds = quantization.weights.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
            print("  quantized (\(quantization.format)): \(kinds) weights, \(formatBytes(quantization.storedBytes)) stored; sizes and dtypes above are dequantized")
        }
        if report.verified == true { print("  verified: every checksum matches and every chunk decodes") }
        for tensor in report.tensors ?? [] {
            var line = "  \(tensor.name)  \(tensor.dtype) \(Shape.describe(tensor.shape))  \(formatBytes(tensor.rawBytes))"
            if let stored = tensor.storedBytes { line += " → \(formatBytes(stored))" }
            if let codec = tensor.codec { line += "  \(codec)" }
            if let hash = tensor.xxh3 { line += "  xxh3 \(hash)" }
            print(line)
        }
    }

    static func describe(_ model: ModelSummary) -> String {
        var parts: [String] = []
        if let architecture = model.architecture ?? model.modelType {
            parts.append(architecture + (model.modelType.map { $0 == architecture ? "" : " (\($0))" } ?? ""))
        }
        if let layers = model.layers { parts.append("\(layers) layers") }
        parts.append("\(model.parameters) parameters")
        parts.append(model.dtypes.joined(separator: "+"))
        let head = model.outputHead.map { "\($0) stored" } ?? "no output head stored"
        switch model.tieWordEmbeddings {
        case true?: parts.append("tied embeddings (\(head))")
        case false?: parts.append("untied embeddings (\(head))")
        case nil: parts.append("tie_word_embeddings unknown: no config.json, or a family peftpack does not know (\(head))")
        }
        parts.append(model.shards == 1 ? "1 file" : "sharded in \(model.shards) files")
        if !model.buffers.isEmpty { parts.append("\(model.buffers.count) stored buffers not counted as parameters") }
        return parts.joined(separator: ", ")
    }
}
