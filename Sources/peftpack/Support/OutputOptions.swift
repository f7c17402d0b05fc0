import ArgumentParser
import Foundation

/// Options every reporting command shares.
struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print the report as one JSON object on stdout.")
    var json = false

    @Flag(name: .long, help: "Never show a progress line, even on a terminal.")
    var quiet = false
}

/// The overwrite rule every writing command shares: an existing output is refused (exit 2)
/// unless --force.
struct OverwriteOptions: ParsableArguments {
    @Flag(name: .long, help: "Replace an existing output (never an input; a file never replaces a folder, nor the reverse).")
    var force = false
}

/// Prints an Encodable report as pretty JSON with sorted keys (stable for scripts and diffs).
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    let data = try encoder.encode(value)
    FileHandle.standardOutput.write(data)
    FileHandle.standardOutput.write(Data("\n".utf8))
}
