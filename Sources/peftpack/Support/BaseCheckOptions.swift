import ArgumentParser
import Foundation
import PeftPack

/// How merge and verify hold the base to what the pack recorded of the base it was made for.
struct BaseCheckOptions: ParsableArguments {
    @Flag(name: .customLong("trust-base"), help: "Compare the base's targeted tensors by name, dtype and shape only, not by content (no hashing).")
    var trustBase = false

    @Flag(name: .customLong("skip-base-check"), help: "Use a base that fails the check (other content, shapes or fingerprint): differences become warnings.")
    var skipBaseCheck = false

    func validate() throws {
        guard !(trustBase && skipBaseCheck) else { throw ValidationError("give --trust-base or --skip-base-check, not both") }
    }

    var level: BaseCheckLevel { skipBaseCheck ? .skipped : trustBase ? .shapes : .content }

    /// Runs `body`, adding to a base mismatch the flags that would accept it.
    func hinting<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let mismatch as BaseMismatchError {
            let hint = mismatch.kind == .content
                ? "pass --trust-base to compare names, dtypes and shapes only (as when un-merging from a merged model), or --skip-base-check"
                : "pass --skip-base-check to use this base anyway"
            throw UsageError("\(mismatch.description); \(hint)")
        }
    }

    func printWarnings(_ report: BaseBinding.Report) {
        for warning in report.warnings { printWarning(warning) }
    }
}
