import ArgumentParser
import PeftPack

struct PeftPackCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peftpack",
        abstract: "Pack, inspect, convert, verify, merge, extract and stack parameter-efficient adapters.",
        discussion: """
            Exit codes: 0 success, 1 verification mismatch, 2 usage or input error, 3 internal error.
            """,
        version: PeftPackVersion.string,
        subcommands: [ImportCommand.self, ExportCommand.self, InspectCommand.self, VerifyCommand.self])
}

PeftPackCommand.main()
