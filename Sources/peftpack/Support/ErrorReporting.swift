import ArgumentParser
import Foundation
import PeftPack

/// Runs a command body and turns errors into the documented exit codes with one line on stderr:
/// input errors (UserFacingError, with the flags that would resolve them) and file-system
/// refusals exit with their code (2 unless stated), anything else is an internal error (3).
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as ExitCode {
        throw error
    } catch let error as UserFacingError {
        printError(FlagHints.message(for: error))
        throw ExitCode(error.exitCode)
    } catch let error as CleanExit {
        throw error
    } catch let error as CocoaError where error.filePath != nil {
        // A file-system refusal Foundation reports (a file the base folder cannot copy, a full
        // disk): the user's environment, not a peftpack bug.
        printError("\(error.filePath!): \(systemErrorText(of: error))")
        throw ExitCode(2)
    } catch {
        printError("internal error: \(error)")
        throw ExitCode(3)
    }
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data("peftpack: error: \(message)\n".utf8))
}

func printWarning(_ message: String) {
    FileHandle.standardError.write(Data("peftpack: warning: \(message)\n".utf8))
}
