import Foundation

/// The fields of an mlx-lm adapter_config.json that decide what `load_adapters` builds, read
/// strictly: each missing or ill-typed field is one line naming the file.
struct MLXAdapterConfig {
    /// `lora_parameters`: what a lora or dora adapter's layers are built with.
    struct LowRankParameters {
        var rank: Int
        var scale: Double
        /// Module paths inside a layer (or from the model root); nil: every linear and embedding of a layer.
        var keys: Set<String>?
    }

    var fineTuneType: MLXAdapterFormat.FineTuneType
    /// mlx-lm adapts `model.layers[-max(num_layers, 0):]`: 0 or less means every layer.
    var numLayers: Int
    /// nil for a full fine-tune: mlx-lm's train_model sets lora_parameters to None before saving
    /// the config, and load_adapters then loads the saved parameters as they are.
    var lowRank: LowRankParameters?

    init(text: String, file: String) throws {
        let json = try InputError.parseConfig(text, file: file)
        guard json.objectMembers != nil else { throw InputError(file: file, problem: "is not a JSON object") }
        let typeName = json["fine_tune_type"].map { $0.stringValue ?? "\($0)" } ?? MLXAdapterFormat.FineTuneType.lora.rawValue
        guard let type = MLXAdapterFormat.FineTuneType(rawValue: typeName) else {
            throw InputError(file: file, problem: "has fine_tune_type \"\(typeName)\", which mlx-lm does not know (lora, dora, full)")
        }
        fineTuneType = type
        guard let layers = json["num_layers"]?.integerValue else {
            throw InputError(file: file, problem: "has no integer num_layers, which says which layers mlx-lm adapts")
        }
        numLayers = Int(layers)
        lowRank = type == .full ? nil : try Self.lowRankParameters(json, type: type, file: file)
    }

    private static func lowRankParameters(_ json: StrictJSON, type: MLXAdapterFormat.FineTuneType, file: String) throws -> LowRankParameters {
        guard let parameters = json["lora_parameters"], parameters.objectMembers != nil else {
            throw InputError(file: file, problem: "has no lora_parameters object (rank, scale), which a \(type.rawValue) adapter needs")
        }
        guard let rank = parameters["rank"]?.integerValue, rank > 0 else {
            throw InputError(file: file, problem: "lora_parameters has no positive integer rank")
        }
        let scale: Double
        switch parameters["scale"] {
        case .integer(let value)?: scale = Double(value)
        case .number(let value)?: scale = value
        default: throw InputError(file: file, problem: "lora_parameters has no numeric scale (mlx-lm's factor on A·B; it has no alpha)")
        }
        switch parameters["keys"] {
        case nil, .null?: return LowRankParameters(rank: Int(rank), scale: scale, keys: nil)
        case .array(let items)?:
            let names = items.compactMap(\.stringValue)
            guard names.count == items.count else { throw InputError(file: file, problem: "lora_parameters.keys is not a list of module paths") }
            return LowRankParameters(rank: Int(rank), scale: scale, keys: Set(names))
        default: throw InputError(file: file, problem: "lora_parameters.keys is not a list of module paths")
        }
    }
}
