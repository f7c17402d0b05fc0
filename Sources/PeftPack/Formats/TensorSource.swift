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
            throw InputError(file: origin, tensor: name, problem: "no such tensor")
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

extension HostTensor {
    /// The same bytes under another shape with the same element count.
    func reshaped(_ shape: [Int]) -> HostTensor {
        HostTensor(dtype: dtype, shape: shape, bytes: bytes)
    }
}
