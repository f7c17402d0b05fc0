import ArgumentParser
import PeftPack

extension PackExport.Format: ExpressibleByArgument {}

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write one adapter of a pack as the folder PEFT or AdapterHub loads unchanged.",
        discussion: """
            The exported folder holds adapter_config.json (the original text when the adapter came \
            from that tool) and the tensors bit-for-bit as they were imported.

            Examples:
              peftpack export lora.peftpack -o lora-out/            # PeftModel.from_pretrained(base, "lora-out")
              peftpack export both.peftpack -o houlsby/ --format adapterhub --name houlsby
            """)

    @Argument(help: "The pack to read.")
    var pack: String

    @Option(name: .shortAndLong, help: "The folder to write (must not exist unless --force).")
    var output: String

    @Option(help: "peft or adapterhub (default: the adapter's own tool).")
    var format: PackExport.Format?

    @Option(help: "Which adapter, when the pack holds several.")
    var name: String?

    @Flag(help: "Replace an existing output folder.")
    var force = false

    @OptionGroup var outputOptions: OutputOptions

    func run() throws {
        try reportingErrors {
            let report = try PackExport.run(pack: pack, output: output, format: format, name: name, force: force)
            if outputOptions.json {
                try printJSON(report)
            } else {
                print("wrote \(report.output) (\(report.format)): adapter \(report.adapter), \(report.tensors) tensors in \(report.files.joined(separator: ", "))")
            }
        }
    }
}
