/// A safetensors file (or shard set) that cannot be read as the reference implementation would.
public struct SafetensorsError: UserFacingError, Equatable {
    public var file: String
    public var tensor: String?
    public var problem: String

    public init(file: String, tensor: String? = nil, problem: String) {
        self.file = file
        self.tensor = tensor
        self.problem = problem
    }

    public var description: String {
        if let tensor { return "\(file): tensor \(tensor): \(problem)" }
        return "\(file): \(problem)"
    }
}
