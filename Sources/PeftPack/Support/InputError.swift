/// An input file or folder that cannot be used as given: a damaged or malformed pack,
/// safetensors, torch.save or GGUF file, an adapter folder whose contents contradict themselves or
/// its config, or an adapter the request cannot be carried out on. One type for every reader, so
/// callers and tests ask `kind`, never a message substring.
public struct InputError: UserFacingError, Equatable {
    public enum Kind: Sendable, Equatable {
        /// Malformed, damaged or contradictory: there is no other way to ask.
        case malformed
        /// Content the reader refuses on principle (a pickle global beyond tensor rebuilding),
        /// however well-formed.
        case forbiddenContent
        /// A saved tensor the adapter's own tool would not load (PEFT drops it without a word).
        case notLoadedByItsTool
        /// An adapter that adds computation, so it has no form folded into weights.
        case notMergeable
        /// A pack holding several adapters where the request needs one.
        case severalAdapters
        /// A pack without an adapter of the name asked for.
        case noSuchAdapter
        /// Every adapter chosen at weight 0, so the request would change nothing.
        case allWeightsZero
        /// A pack holding several adapters given one new name.
        case oneNameForSeveral
        /// Two adapters of the output, or two chosen, have the same name.
        case duplicateName
        /// The pack lacks facts about its base that are recorded when it is imported with the base.
        case baseNotRecorded
        /// The source can only be read with the base model at hand.
        case needsBaseModel
        /// A kind of adapter PEFT has no form for; AdapterHub has.
        case onlyAdapterHubExpresses
        /// A kind of adapter AdapterHub has no form for; PEFT has.
        case onlyPeftExpresses
        /// A tensor stored as a dense delta, which no adapter format expresses.
        case denseDelta
        /// An AdapterHub folder that also holds a prediction head, which a pack cannot carry yet.
        case predictionHead
        /// A tensor stored in a type (a ggml quantization) peftpack has no reader for.
        case unsupportedTensorType
        /// An adapter, or a part of one, the requested format has no form for (MLX: IA3, biases).
        case notExpressible
    }

    public var file: String
    public var tensor: String?
    public var problem: String
    public var kind: Kind

    public init(file: String, tensor: String? = nil, problem: String, kind: Kind = .malformed) {
        self.file = file
        self.tensor = tensor
        self.problem = problem
        self.kind = kind
    }

    public var description: String {
        if let tensor { return "\(file): tensor \(tensor): \(problem)" }
        return "\(file): \(problem)"
    }
}

extension InputError {
    /// Parses a tool's config file strictly (duplicate keys refused), naming the file on error.
    static func parseConfig(_ text: String, file: String) throws -> StrictJSON {
        do {
            return try StrictJSON.parse(Array(text.utf8))
        } catch {
            throw InputError(file: file, problem: "is not valid JSON: \(error)")
        }
    }
}
