/// Errors a user can act on: the CLI prints `description` as one line and exits with `exitCode`.
///
/// Exit codes are a contract (README): 0 ok, 1 verification mismatch, 2 usage or input error,
/// 3 internal error.
public protocol UserFacingError: Error, CustomStringConvertible {
    var exitCode: Int32 { get }
}

extension UserFacingError {
    public var exitCode: Int32 { 2 }
}

/// A request that cannot be carried out as given (bad option values, a budget too small): exit 2.
public struct UsageError: UserFacingError {
    public var description: String

    public init(_ description: String) { self.description = description }
}
