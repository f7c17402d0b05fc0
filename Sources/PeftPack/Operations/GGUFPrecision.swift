/// What a merge into a GGUF base writes its merged tensors as (untouched tensors keep their
/// blocks). `automatic`: a quantized tensor as F16 (llama-export-lora's choice, what users are told
/// to do by hand), a float one in its own type; `same`: each in the type the base stores it in,
/// requantized; `fixed`: every merged tensor in one type.
public enum GGUFPrecision: Equatable, Sendable {
    case automatic
    case same
    case fixed(GGUF.ElementType)

    /// The type `entry`'s merge is written as; refused when its rows are not whole blocks of it.
    func type(merging entry: GGUF.TensorEntry, file: String) throws -> GGUF.ElementType {
        let type: GGUF.ElementType
        switch self {
        case .automatic: type = entry.type.isQuantized ? .f16 : entry.type
        case .same: type = entry.type
        case .fixed(let fixed): type = fixed
        }
        guard GGUF.ElementType.writable.contains(type) else {
            throw InputError(file: file, tensor: entry.name, problem: "is stored as \(type.ggmlName), which peftpack does not write yet (it writes \(GGUF.ElementType.writable.map(\.ggmlName).joined(separator: ", "))): merge to F16 or another type")
        }
        guard type.byteCount(shape: entry.shape) != nil else {
            throw InputError(file: file, tensor: entry.name, problem: "has rows of \(entry.shape.last ?? 0) elements, which are not whole \(type.ggmlName) blocks of \(type.block.elements): its merge cannot be written as \(type.ggmlName)")
        }
        return type
    }
}

/// A wider type for the merged modules whose change the requantization kept too little of
/// (QuantizationSurvival.survival below the merge's minimum), or for every merged module.
public struct Promotion: Equatable, Sendable {
    public enum Precision: String, CaseIterable, Sendable {
        case q8_0, bf16, f16, f32

        var ggufType: GGUF.ElementType {
            switch self {
            case .q8_0: .q8_0
            case .bf16: .bf16
            case .f16: .f16
            case .f32: .f32
            }
        }
    }

    public var precision: Precision
    public var allMerged: Bool

    public init(precision: Precision, allMerged: Bool) {
        self.precision = precision
        self.allMerged = allMerged
    }

    var type: GGUF.ElementType { precision.ggufType }
}

extension GGUF.ElementType {
    /// Whether values are stored in blocks with scales (not one float per element).
    var isQuantized: Bool { block.elements > 1 }

    /// The dtype of a float type's elements.
    var floatDType: DType? {
        switch self {
        case .f32: .f32
        case .f16: .f16
        case .bf16: .bf16
        default: nil
        }
    }
}
