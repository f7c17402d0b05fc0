import ArgumentParser
import Foundation
import PeftPack

struct PeftPackCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peftpack",
        abstract: "Pack, inspect, convert, resize, verify, merge, extract and stack parameter-efficient adapters.",
        discussion: """
            Exit codes: 0 success, 1 verification mismatch, 2 usage or input error, 3 internal error, \
            130/143/129 interrupted by SIGINT/SIGTERM/SIGHUP (the temporary output is removed).

            Every writing command (import, export, merge, extract, stack, convert, resize) refuses an existing output \
            unless --force, and never replaces an input.
            """,
        version: PeftPackVersion.string,
        subcommands: [ImportCommand.self, ExportCommand.self, InspectCommand.self, VerifyCommand.self, MergeCommand.self, ExtractCommand.self, StackCommand.self, ConvertCommand.self, ResizeCommand.self])
}

// No command wants OpenBLAS's load-time worker threads spinning beside it; `verify` wakes them
// for models large enough to use them.
BLAS.stopThreadPool()
InterruptCleanup.install()

/// ArgumentParser reports usage errors with EX_USAGE (64) and the usage text; peftpack's contract
/// is exit 2 and one line on stderr for every usage or input error (the option values the commands
/// check in `validate()` included), so map it here and leave help, version and our own codes untouched.
if let message = HelpRequest.unknownTopicMessage(Array(CommandLine.arguments.dropFirst()), root: PeftPackCommand.self) {
    printError(message)
    exit(2)
}
do {
    var command = try PeftPackCommand.parseAsRoot()
    try command.run()
} catch {
    let code = PeftPackCommand.exitCode(for: error)
    if code == .validationFailure {
        printError(PeftPackCommand.message(for: error))
        exit(2)
    }
    PeftPackCommand.exit(withError: error)
}
