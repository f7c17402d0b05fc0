import Foundation

/// Element-wise non-linearities, named as transformers' ACT2FN (and AdapterHub's
/// Activation_Function_Class, which lower-cases the name and adds "leakyrelu") names them.
enum ActivationFunction: Sendable, Equatable {
    /// x·Φ(x) with the exact error function (nn.GELU()).
    case gelu
    /// The tanh approximation of GELU (gelu_new, gelu_pytorch_tanh).
    case geluTanh
    /// 0.5·x·(1 + tanh(0.7978845608·x·(1 + 0.044715·x²))), transformers' FastGELUActivation.
    case geluFast
    /// x·σ(1.702·x).
    case quickGelu
    case relu
    case relu6
    /// x·σ(x) (silu, swish).
    case silu
    case tanh
    case sigmoid
    /// max(x, 0.01·x), torch's default negative slope.
    case leakyRelu
    case mish
    case identity

    init(name: String) throws {
        switch name.lowercased() {
        case "gelu": self = .gelu
        case "gelu_new", "gelu_pytorch_tanh": self = .geluTanh
        case "gelu_fast": self = .geluFast
        case "quick_gelu": self = .quickGelu
        case "relu": self = .relu
        case "relu6": self = .relu6
        case "silu", "swish": self = .silu
        case "tanh": self = .tanh
        case "sigmoid": self = .sigmoid
        case "leakyrelu", "leaky_relu": self = .leakyRelu
        case "mish": self = .mish
        case "linear", "identity": self = .identity
        default: throw RuntimeError.invalidConfig("activation \(name) is not supported")
        }
    }

    static func validate(_ name: String) throws {
        _ = try ActivationFunction(name: name)
    }

    func apply(_ x: inout TokenMatrix) {
        x.values.withUnsafeMutableBufferPointer { v in
            for i in 0..<v.count { v[i] = self(v[i]) }
        }
    }

    func callAsFunction(_ x: Float) -> Float {
        switch self {
        case .gelu:
            return 0.5 * x * (1 + erf(x * Float(0.5.squareRoot())))
        case .geluTanh:
            return 0.5 * x * (1 + Foundation.tanh(Float((2 / Double.pi).squareRoot()) * (x + 0.044715 * x * x * x)))
        case .geluFast:
            return 0.5 * x * (1 + Foundation.tanh(x * 0.7978845608 * (1 + 0.044715 * x * x)))
        case .quickGelu:
            return x * ActivationFunction.logistic(1.702 * x)
        case .relu:
            return max(x, 0)
        case .relu6:
            return min(max(x, 0), 6)
        case .silu:
            return x * ActivationFunction.logistic(x)
        case .tanh:
            return Foundation.tanh(x)
        case .sigmoid:
            return ActivationFunction.logistic(x)
        case .leakyRelu:
            return x >= 0 ? x : 0.01 * x
        case .mish:
            // softplus as torch computes it: linear above 20 to avoid overflow.
            let softplus = x > 20 ? x : log1p(exp(x))
            return x * Foundation.tanh(softplus)
        case .identity:
            return x
        }
    }

    private static func logistic(_ x: Float) -> Float {
        1 / (1 + exp(-x))
    }
}
