import ArgumentParser
import PeftPack

// Typed values of the options: each is parsed once, where the parser reads it, so a command
// works with the value and never re-parses or unwraps a string. A value that does not parse is
// a usage error naming the option and the accepted forms.

/// Why an option's text is not a value of its type (ArgumentParser prefixes the option and value).
struct OptionValueError: Error, CustomStringConvertible {
    var description: String
}

/// merge --dtype: the base's own dtype, one the merge can round to, or `same`: a quantized base
/// stays quantized. DType's user names (fp16, float16, half, …) are accepted as before; help
/// lists the canonical ones.
enum MergeOutputDType: ExpressibleByArgument {
    case auto
    case same
    case dtype(DType)
    /// A quantized type: a ggml one (GGUF base) or the bitsandbytes base's own.
    case quantized(String)

    static let quantizedNames = ["nf4", "fp4", "int8", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k"]

    init?(argument: String) {
        if argument == "auto" {
            self = .auto
        } else if argument == "same" {
            self = .same
        } else if Self.quantizedNames.contains(argument.lowercased()) {
            self = .quantized(argument.lowercased())
        } else if let dtype = DType(userName: argument), [DType.bf16, .f16, .f32].contains(dtype) {
            self = .dtype(dtype)
        } else {
            return nil
        }
    }

    static var allValueStrings: [String] { ["bf16", "fp16", "fp32", "auto", "same"] + quantizedNames }

    var defaultValueDescription: String { "auto" }

    /// The parser's transform: with sixteen values ArgumentParser's own refusal would list them one
    /// per line, and a refusal is one line.
    static func parse(_ text: String) throws -> MergeOutputDType {
        guard let value = MergeOutputDType(argument: text) else {
            throw OptionValueError(description: "give bf16, fp16, fp32, auto, same or a quantized type (\(quantizedNames.joined(separator: ", ")))")
        }
        return value
    }

    /// nil: keep each tensor's dtype.
    var dtype: DType? {
        if case .dtype(let dtype) = self { return dtype }
        return nil
    }

    var keepsQuantization: Bool {
        if case .same = self { return true }
        return false
    }

    var quantizedType: String? {
        if case .quantized(let name) = self { return name }
        return nil
    }

    var requantizes: Bool { keepsQuantization || quantizedType != nil }
}

/// merge --promote: the wider precision modules that kept too little of their change are written in.
extension Promotion.Precision: ExpressibleByArgument {
    public init?(argument: String) {
        self.init(rawValue: argument.lowercased() == "fp16" ? "f16" : argument.lowercased() == "fp32" ? "f32" : argument.lowercased())
    }

    public static var allValueStrings: [String] { ["q8_0", "bf16", "fp16", "fp32"] }
}

/// export --dtype: the GGUF tensor types peftpack writes.
enum GGUFTensorType: String, CaseIterable, ExpressibleByArgument {
    case f32, f16, bf16, q8_0

    var elementType: GGUF.ElementType {
        switch self {
        case .f32: .f32
        case .f16: .f16
        case .bf16: .bf16
        case .q8_0: .q8_0
        }
    }
}

extension TiedEmbeddingsPolicy: ExpressibleByArgument {}
extension PackExport.Format: ExpressibleByArgument {}
extension Extract.EmbeddingPolicy: ExpressibleByArgument {}
extension Extract.OtherPolicy: ExpressibleByArgument {}

enum OptionValue {
    /// Bytes from "500MB", "2GiB" or a plain count.
    static func byteSize(_ text: String) throws -> Int {
        guard let bytes = FileSize.parse(text) else { throw OptionValueError(description: "not a size such as 500MB or 2GB") }
        return bytes
    }

    /// Parameters from "2M"/"2000000" (a count) or "8MB"/"1GiB" (bytes of fp32 tensors).
    static func parameterBudget(_ text: String) throws -> Int {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let parameters: Int?
        if trimmed.uppercased().hasSuffix("B") {
            parameters = FileSize.parse(trimmed).map { $0 / DType.f32.byteSize }
        } else if let last = trimmed.last?.uppercased().first, let multiplier = ["K": 1e3, "M": 1e6, "G": 1e9][last],
                  let value = Double(trimmed.dropLast()) {
            parameters = Int(exactly: (value * multiplier).rounded(.towardZero))
        } else {
            parameters = Int(trimmed)
        }
        guard let parameters else {
            throw OptionValueError(description: "not a parameter count (2000000, 2M) or a size in bytes (8MB, 1GiB)")
        }
        return parameters
    }

    /// "BATCH,SEQ" of positive integers.
    static func inputShape(_ text: String) throws -> InputShape {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { Int($0) }
        guard parts.count == 2, let batch = parts[0], let tokens = parts[1], batch > 0, tokens > 0 else {
            throw OptionValueError(description: "takes BATCH,SEQ (positive integers)")
        }
        return InputShape(batch: batch, tokens: tokens)
    }

    /// "KEY=VALUE" with a non-empty KEY; the value may be empty or hold further "=".
    static func metadataEntry(_ text: String) throws -> MetadataEntry {
        guard let equals = text.firstIndex(of: "="), equals != text.startIndex else { throw OptionValueError(description: "takes KEY=VALUE") }
        return MetadataEntry(key: String(text[..<equals]), value: String(text[text.index(after: equals)...]))
    }
}

/// verify --input-ids.
struct InputShape {
    var batch: Int
    var tokens: Int
}

/// import --metadata.
struct MetadataEntry {
    var key: String
    var value: String
}

/// merge and stack --weight: one finite number per PACK, or none.
func validateWeights(_ weights: [Double], packs: Int) throws {
    guard weights.isEmpty || weights.count == packs else {
        throw ValidationError("--weight is given \(weights.count) times for \(packs) packs; give one per pack or none")
    }
    if let bad = weights.first(where: { !$0.isFinite }) {
        throw ValidationError("--weight \(bad) is not a finite number")
    }
}
