/// Element types of tensors, named as safetensors names them.
public enum DType: String, CaseIterable, Sendable, Codable {
    case f64 = "F64"
    case f32 = "F32"
    case f16 = "F16"
    case bf16 = "BF16"
    case i64 = "I64"
    case i32 = "I32"
    case i16 = "I16"
    case i8 = "I8"
    case u64 = "U64"
    case u32 = "U32"
    case u16 = "U16"
    case u8 = "U8"
    case bool = "BOOL"

    public var byteSize: Int {
        switch self {
        case .f64, .i64, .u64: 8
        case .f32, .i32, .u32: 4
        case .f16, .bf16, .i16, .u16: 2
        case .i8, .u8, .bool: 1
        }
    }

    public var isFloatingPoint: Bool {
        switch self {
        case .f64, .f32, .f16, .bf16: true
        default: false
        }
    }

    /// Parses the short names users type on the command line (`bf16`, `fp16`, `fp32`, `f32`, …).
    public init?(userName: String) {
        switch userName.lowercased() {
        case "f64", "fp64", "float64", "double": self = .f64
        case "f32", "fp32", "float32", "float": self = .f32
        case "f16", "fp16", "float16", "half": self = .f16
        case "bf16", "bfloat16": self = .bf16
        default:
            guard let dtype = DType(rawValue: userName.uppercased()) else { return nil }
            self = dtype
        }
    }
}
