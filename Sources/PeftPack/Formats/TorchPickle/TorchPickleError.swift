/// A torch.save file that is malformed, or whose pickle asks for anything beyond rebuilding
/// tensors. Nothing in such a file is ever executed.
public struct TorchPickleError: UserFacingError, Equatable {
    public var file: String
    public var problem: String

    public var description: String { "\(file): \(problem)" }

    static func forbiddenGlobal(file: String, name: String) -> TorchPickleError {
        TorchPickleError(file: file, problem: "pickle references forbidden global \(name); only torch tensor rebuild helpers are allowed (the file was not loaded)")
    }
}
