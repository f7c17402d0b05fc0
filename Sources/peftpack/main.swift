import ArgumentParser
import PeftPack

@main
struct PeftPackCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peftpack",
        abstract: "Pack, inspect, convert, verify, merge, extract and stack parameter-efficient adapters.",
        version: PeftPackVersion.string,
        subcommands: [])
}
