/// Anything that hands out named tensors one at a time: a safetensors file, a checkpoint folder,
/// a torch pickle already read, a pack.
public protocol TensorSource: AnyObject {
    var tensorNames: [String] { get }
    func info(_ name: String) -> TensorInfo?
    func tensor(_ name: String) throws -> HostTensor
}

extension SafetensorsFile: TensorSource {
    public var tensorNames: [String] { names }
}

extension Checkpoint: TensorSource {
    public var tensorNames: [String] { names }
}

/// Tensors held in memory, in insertion order.
public final class DictionaryTensorSource: TensorSource {
    public private(set) var tensorNames: [String] = []
    private var tensors: [String: HostTensor] = [:]
    public let origin: String

    public init(_ entries: [(name: String, tensor: HostTensor)], origin: String) {
        self.origin = origin
        for (name, tensor) in entries {
            if tensors[name] == nil { tensorNames.append(name) }
            tensors[name] = tensor
        }
    }

    public func info(_ name: String) -> TensorInfo? {
        tensors[name].map { TensorInfo(name: name, dtype: $0.dtype, shape: $0.shape) }
    }

    public func tensor(_ name: String) throws -> HostTensor {
        guard let tensor = tensors[name] else {
            throw AdapterFormatError(file: origin, tensor: name, problem: "no such tensor")
        }
        return tensor
    }
}

/// A tensor an importer will put into a pack: its pack name and shape, and how to produce its
/// bytes from the source (an exact copy or rearrangement; never arithmetic on values).
public struct ImportedTensor {
    public var packName: String
    public var info: TensorInfo
    public var load: () throws -> HostTensor

    public init(packName: String, info: TensorInfo, load: @escaping () throws -> HostTensor) {
        self.packName = packName
        self.info = info
        self.load = load
    }
}

public struct ImportedAdapter {
    public var adapter: Adapter
    public var tensors: [ImportedTensor]
    /// Saved tensors the source tool itself would not load, left out on request, with the reason.
    public var leftOut: [(tensor: String, reason: String)] = []
}

/// A source adapter folder or file whose contents contradict themselves or its config, or an
/// adapter the request cannot be carried out on.
public struct AdapterFormatError: UserFacingError {
    /// What is wrong, for callers that answer some refusals with a way out (the CLI names the
    /// flag); the library states only the fact.
    public enum Kind: Sendable, Equatable {
        /// Malformed or contradictory: there is no other way to ask.
        case malformed
        /// A saved tensor the adapter's own tool would not load (PEFT drops it without a word).
        case notLoadedByItsTool
        /// An adapter that adds computation, so it has no form folded into weights.
        case notMergeable
        /// A pack holding several adapters where the request needs one.
        case severalAdapters
        /// A pack holding several adapters given one new name.
        case oneNameForSeveral
        /// Two adapters of the output have the same name.
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

extension AdapterFormatError {
    /// Parses a tool's config file strictly (duplicate keys refused), naming the file on error.
    static func parseConfig(_ text: String, file: String) throws -> StrictJSON {
        do {
            return try StrictJSON.parse(Array(text.utf8))
        } catch {
            throw AdapterFormatError(file: file, problem: "is not valid JSON: \(error)")
        }
    }
}

extension HostTensor {
    /// The same bytes under another shape with the same element count.
    func reshaped(_ shape: [Int]) -> HostTensor {
        HostTensor(dtype: dtype, shape: shape, bytes: bytes)
    }
}
