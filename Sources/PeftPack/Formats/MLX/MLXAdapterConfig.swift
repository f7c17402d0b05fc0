import Foundation

/// The fields of an mlx-lm adapter_config.json that decide what `load_adapters` builds, read
/// strictly: each missing or ill-typed field is one line naming the file.
struct MLXAdapterConfig {
    var fineTuneType: MLXAdapterFormat.FineTuneType
    /// mlx-lm adapts `model.layers[-max(num_layers, 0):]`: 0 or less means every layer.
    var numLayers: Int
    var rank: Int
    var scale: Double
    /// Module paths inside a layer (or from the model root); nil: every linear and embedding of a layer.
    var keys: Set<String>?

    init(text: String, file: String) throws {
        let json = try InputError.parseConfig(text, file: file)
        guard json.objectMembers != nil else { throw InputError(file: file, problem: "is not a JSON object") }
        let typeName = json["fine_tune_type"].map { $0.stringValue ?? "\($0)" } ?? MLXAdapterFormat.FineTuneType.lora.rawValue
        guard let type = MLXAdapterFormat.FineTuneType(rawValue: typeName) else {
            throw InputError(file: file, problem: "has fine_tune_type \"\(typeName)\", which mlx-lm does not know (lora, dora, full)")
        }
        guard type != .full else {
            throw InputError(file: file, problem: "is a full fine-tune (fine_tune_type full); peftpack imports MLX lora and dora adapters: fuse it into the base with mlx_lm.fuse and store its change as a low-rank pack with peftpack extract (the fused model against the base)", kind: .notExpressible)
        }
        fineTuneType = type
        guard let layers = json["num_layers"]?.integerValue else {
            throw InputError(file: file, problem: "has no integer num_layers, which says which layers mlx-lm adapts")
        }
        numLayers = Int(layers)
        guard let parameters = json["lora_parameters"], parameters.objectMembers != nil else {
            throw InputError(file: file, problem: "has no lora_parameters object (rank, scale), which a \(type.rawValue) adapter needs")
        }
        guard let rank = parameters["rank"]?.integerValue, rank > 0 else {
            throw InputError(file: file, problem: "lora_parameters has no positive integer rank")
        }
        self.rank = Int(rank)
        switch parameters["scale"] {
        case .integer(let value)?: scale = Double(value)
        case .number(let value)?: scale = value
        default: throw InputError(file: file, problem: "lora_parameters has no numeric scale (mlx-lm's factor on A·B; it has no alpha)")
        }
        switch parameters["keys"] {
        case nil, .null?: keys = nil
        case .array(let items)?:
            let names = items.compactMap(\.stringValue)
            guard names.count == items.count else { throw InputError(file: file, problem: "lora_parameters.keys is not a list of module paths") }
            keys = Set(names)
        default: throw InputError(file: file, problem: "lora_parameters.keys is not a list of module paths")
        }
    }
}
