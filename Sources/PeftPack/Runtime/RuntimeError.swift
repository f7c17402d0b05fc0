/// Why a model could not be loaded, an adapter could not be attached, or a forward pass refused
/// its input. Every description is one line naming the file, tensor or adapter at fault.
public enum RuntimeError: UserFacingError, Equatable {
    /// config.json is missing a field, holds an impossible value or asks for an unsupported feature.
    case invalidConfig(String)
    case unsupportedArchitecture(String)
    case missingWeight(name: String, expectedShape: [Int])
    case weightShape(name: String, shape: [Int], expected: [Int])
    case weightDType(name: String, dtype: DType)
    case unknownTarget(adapter: String, target: String)
    case missingAdapterTensor(adapter: String, target: String, role: String)
    case unexpectedAdapterTensor(adapter: String, target: String, role: String)
    case adapterTensorShape(adapter: String, tensor: String, shape: [Int], expected: String)
    case invalidAdapter(adapter: String, reason: String)
    case invalidInput(String)
    case adapterSetForOtherModel

    public var description: String {
        switch self {
        case .invalidConfig(let reason):
            "config.json: \(reason)"
        case .unsupportedArchitecture(let reason):
            "config.json: unsupported architecture: \(reason)"
        case .missingWeight(let name, let shape):
            "checkpoint: tensor \(name) \(Shape.describe(shape)) is missing"
        case .weightShape(let name, let shape, let expected):
            "checkpoint: tensor \(name) has shape \(Shape.describe(shape)) but the config implies \(Shape.describe(expected))"
        case .weightDType(let name, let dtype):
            "checkpoint: tensor \(name) has dtype \(dtype.rawValue); only F64, F32, F16 and BF16 weights can be run"
        case .unknownTarget(let adapter, let target):
            "adapter \(adapter): target \(target) is not a module of this model"
        case .missingAdapterTensor(let adapter, let target, let role):
            "adapter \(adapter): module \(target) has no \(role) tensor"
        case .unexpectedAdapterTensor(let adapter, let target, let role):
            "adapter \(adapter): module \(target) carries a \(role) tensor this kind does not use"
        case .adapterTensorShape(let adapter, let tensor, let shape, let expected):
            "adapter \(adapter): tensor \(tensor) has shape \(Shape.describe(shape)) but the model needs \(expected)"
        case .invalidAdapter(let adapter, let reason):
            "adapter \(adapter): \(reason)"
        case .invalidInput(let reason):
            "input: \(reason)"
        case .adapterSetForOtherModel:
            "adapter set was built for a different model instance"
        }
    }
}
