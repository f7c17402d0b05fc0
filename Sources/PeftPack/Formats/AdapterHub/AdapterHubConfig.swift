/// AdapterHub's adapter_config.json: `{"config": {…}, "name", "model_class", "model_type", …}`.
/// Only bottleneck configs whose math the pack can state are accepted; options that add tensors
/// or change the computation beyond the recorded settings are refused by name.
public struct AdapterHubConfig {
    var name: String
    var architecture: String
    var settings: AdapterSettings
    var modelType: String?
    var modelName: String?
    var hiddenSize: Int?

    public init(text: String, file: String) throws {
        func fail(_ problem: String) -> InputError { InputError(file: file, problem: problem) }
        let json = try InputError.parseConfig(text, file: file)
        guard let config = json["config"], config.objectMembers != nil else { throw fail("has no \"config\" object") }
        guard let name = json["name"]?.stringValue else { throw fail("has no adapter \"name\"") }
        self.name = name
        modelType = json["model_type"]?.stringValue
        modelName = json["model_name"]?.stringValue
        hiddenSize = json["hidden_size"]?.integerValue.map(Int.init)

        if let method = Self.unsupportedMethod(config) {
            throw fail("AdapterHub \(method) adapters are not supported yet; peftpack reads AdapterHub bottleneck adapters (Houlsby, Pfeiffer)")
        }

        func flag(_ key: String) -> Bool? {
            if case .bool(let value)? = config[key] { return value }
            return nil
        }
        func number(_ key: String) -> Double? {
            switch config[key] {
            case .integer(let value)?: Double(value)
            case .number(let value)?: value
            default: nil
            }
        }
        let outputAdapter = flag("output_adapter") ?? true
        let attentionAdapter = flag("mh_adapter") ?? false
        guard outputAdapter else { throw fail("adapters with output_adapter = false are not supported") }
        architecture = attentionAdapter ? "houlsby" : "pfeiffer"
        for unsupported in ["ln_before", "ln_after", "use_gating", "is_parallel", "phm_layer"] where flag(unsupported) == true {
            throw fail("bottleneck option \(unsupported) = true is not supported")
        }
        if let inverse = config["inv_adapter"], inverse != .null {
            throw fail("invertible adapters (inv_adapter) are not supported")
        }
        if case .string(let residual)? = config["residual_before_ln"] {
            throw fail("residual_before_ln = \"\(residual)\" is not supported")
        }
        guard case .string(let nonLinearity)? = config["non_linearity"] else { throw fail("config has no non_linearity") }
        var settings = AdapterSettings()
        settings.bottleneckArchitecture = architecture
        settings.nonLinearity = nonLinearity.lowercased()
        settings.reductionFactor = number("reduction_factor")
        settings.originalLnBefore = flag("original_ln_before") ?? false
        settings.originalLnAfter = flag("original_ln_after") ?? true
        settings.residualBeforeLn = flag("residual_before_ln") ?? true
        guard let scaling = number("scaling") ?? (config["scaling"] == nil ? 1.0 : nil) else {
            throw fail("only a numeric scaling is supported")
        }
        settings.scaling = scaling
        self.settings = settings
    }

    /// The method an AdapterHub config's `architecture` names when it is not a bottleneck adapter
    /// (adapters 1.3 `AdapterConfig.load`: absent or "bottleneck" means a bottleneck config). The
    /// LoRA family shares `architecture: "lora"`; IA3 is the one that composes by scaling.
    static func unsupportedMethod(_ config: StrictJSON) -> String? {
        guard case .string(let architecture)? = config["architecture"], architecture != "bottleneck" else { return nil }
        switch architecture {
        case "lora":
            if config["composition_mode"]?.stringValue == "scale" { return "IA3" }
            if case .bool(true)? = config["use_dora"] { return "DoRA" }
            if let d = config["vera_d"], d != .null { return "VeRA" }
            return "LoRA"
        case "prefix_tuning": return "prefix tuning"
        case "prompt_tuning": return "prompt tuning"
        case "mtl_lora": return "MTL-LoRA"
        case "reft": return "ReFT"
        case "union": return "ConfigUnion (combined methods such as MAM, UniPELT)"
        default: return "\"\(architecture)\""
        }
    }
}
