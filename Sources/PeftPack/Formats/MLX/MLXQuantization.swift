/// The `quantization` entry `mlx_lm.convert -q` (quantize_model) writes into config.json:
/// `{"group_size": 64, "bits": 4, "mode": "affine", "<module path>": {...} | false, ...}`
/// (`--q-mode mxfp4` writes `{"group_size": 32, "bits": 4, "mode": "mxfp4"}`). The top
/// level gives every quantized layer's parameters; a member named after a module overrides them
/// for that module (mlx-lm's mixed-precision recipes), `false` keeps it unquantized. Which modules
/// are quantized is what the weights say (mlx-lm's loader quantizes a layer when its `.scales`
/// is stored), so this only answers "with what parameters".
struct MLXQuantization: Equatable {
    struct Parameters: Equatable {
        var groupSize: Int
        var bits: Int
        var mode: Mode = .affine
    }

    /// mx.quantize's modes: affine (integer codes, a scale and a bias per group, AffineQuantizer)
    /// and the float ones (E2M1 or E4M3 codes with a uint8 scale per group, FloatBlockQuantizer).
    enum Mode: String, CaseIterable {
        case affine, mxfp4, mxfp8, nvfp4

        var isFloat: Bool { self != .affine }
        /// A float mode's one group size and bit width (mlx 0.32 ops.cpp fp_quantize requires them).
        var groupSize: Int { self == .nvfp4 ? 16 : 32 }
        var bits: Int { self == .mxfp8 ? 8 : 4 }
    }

    /// mx.quantize's affine group sizes and bits (mlx 0.32 ops.cpp affine_quantize); 5 is left
    /// out, being packed in 5-byte units peftpack does not read yet.
    static let groupSizes = [32, 64, 128]
    static let bits = [2, 3, 4, 6, 8]

    var defaults: Parameters
    var overrides: [String: Parameters?]

    /// The entry of config.json's text, nil when it has none (a model that is not MLX-quantized).
    init?(configText: String, file: String) throws {
        guard let entry = try InputError.parseConfig(configText, file: file)["quantization"] else { return nil }
        guard let members = entry.objectMembers else {
            throw InputError(file: file, problem: "quantization is not an object")
        }
        defaults = try Self.parameters(members, at: "quantization", file: file)
        var overrides: [String: Parameters?] = [:]
        for (key, value) in members where !["group_size", "bits", "mode"].contains(key) {
            switch value {
            case .bool(false): overrides[key] = .some(nil)
            case .object(let layer): overrides[key] = try Self.parameters(layer, at: "quantization.\(key)", file: file)
            default: throw InputError(file: file, problem: "quantization.\(key) is neither false nor an object of group_size and bits")
            }
        }
        self.overrides = overrides
    }

    /// The parameters a module (its path, `model.layers.0.mlp.down_proj`) is quantized with.
    func parameters(ofModule path: String) -> Parameters? {
        if let override = overrides[path] { return override }
        return defaults
    }

    private static func parameters(_ members: [(key: String, value: StrictJSON)], at path: String, file: String) throws -> Parameters {
        func integer(_ key: String) throws -> Int {
            guard let value = members.first(where: { $0.key == key })?.value.integerValue else {
                throw InputError(file: file, problem: "\(path).\(key) is missing or not an integer")
            }
            return Int(value)
        }
        // A per-module entry without a mode is affine: mlx's to_quantized defaults to it.
        let name = members.first(where: { $0.key == "mode" })?.value.stringValue ?? "affine"
        guard let mode = Mode(rawValue: name) else {
            throw InputError(file: file, problem: "\(path).mode is \(name), which peftpack does not read (it reads \(Mode.allCases.map(\.rawValue).joined(separator: ", ")))", kind: .unsupportedTensorType)
        }
        let parameters = Parameters(groupSize: try integer("group_size"), bits: try integer("bits"), mode: mode)
        if mode.isFloat {
            guard parameters.groupSize == mode.groupSize, parameters.bits == mode.bits else {
                throw InputError(file: file, problem: "\(path) is \(mode.rawValue) with group_size \(parameters.groupSize) and bits \(parameters.bits); \(mode.rawValue) has group_size \(mode.groupSize) and bits \(mode.bits)", kind: .unsupportedTensorType)
            }
            return parameters
        }
        guard groupSizes.contains(parameters.groupSize) else {
            throw InputError(file: file, problem: "\(path).group_size is \(parameters.groupSize), which is not one of mlx's affine group sizes \(groupSizes.map(String.init).joined(separator: ", "))", kind: .unsupportedTensorType)
        }
        guard bits.contains(parameters.bits) else {
            throw InputError(file: file, problem: "\(path).bits is \(parameters.bits), which peftpack does not read (it reads \(bits.map(String.init).joined(separator: ", ")))", kind: .unsupportedTensorType)
        }
        return parameters
    }
}
