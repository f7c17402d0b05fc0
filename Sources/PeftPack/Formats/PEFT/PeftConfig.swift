import Foundation

/// The parts of PEFT's adapter_config.json that decide what the saved tensors mean.
public struct PeftConfig {
    var peftType: String
    var rank: Int
    var loraAlpha: Double
    var useRSLoRA: Bool
    var useDoRA: Bool
    var fanInFanOut: Bool
    /// Insertion order matters: PEFT takes the first pattern that matches.
    var rankPattern: [(key: String, value: Int)]
    var alphaPattern: [(key: String, value: Double)]
    var feedforwardModules: [String]
    var numVirtualTokens: Int?
    var numLayers: Int?
    var tokenDim: Int?
    var numAttentionHeads: Int?
    var numTransformerSubmodules: Int?
    var baseModelNameOrPath: String?

    public init(text: String, file: String) throws {
        func fail(_ problem: String) -> AdapterFormatError { AdapterFormatError(file: file, problem: problem) }
        let json = try AdapterFormatError.parseConfig(text, file: file)
        guard json.objectMembers != nil else { throw fail("is not a JSON object") }
        guard let type = json["peft_type"]?.stringValue else { throw fail("has no peft_type") }
        peftType = type

        func integer(_ key: String) throws -> Int? {
            switch json[key] {
            case nil, .null?: return nil
            case .integer(let value)?: return Int(value)
            default: throw fail("\(key) is not an integer")
            }
        }
        func number(_ value: StrictJSON?, _ key: String) throws -> Double? {
            switch value {
            case nil, .null?: return nil
            case .integer(let number)?: return Double(number)
            case .number(let number)?: return number
            default: throw fail("\(key) is not a number")
            }
        }
        func bool(_ key: String) throws -> Bool {
            switch json[key] {
            case nil, .null?: return false
            case .bool(let value)?: return value
            default: throw fail("\(key) is not true or false")
            }
        }
        rank = try integer("r") ?? 8
        loraAlpha = try number(json["lora_alpha"], "lora_alpha") ?? 8
        useRSLoRA = try bool("use_rslora")
        useDoRA = try bool("use_dora")
        fanInFanOut = try bool("fan_in_fan_out")
        rankPattern = try (json["rank_pattern"]?.objectMembers ?? []).map { member in
            guard let value = member.value.integerValue else { throw fail("rank_pattern[\(member.key)] is not an integer") }
            return (member.key, Int(value))
        }
        alphaPattern = try (json["alpha_pattern"]?.objectMembers ?? []).map { member in
            (member.key, try number(member.value, "alpha_pattern[\(member.key)]") ?? 0)
        }
        switch json["feedforward_modules"] {
        case .string(let single)?: feedforwardModules = [single]
        case .array(let items)?: feedforwardModules = items.compactMap(\.stringValue)
        default: feedforwardModules = []
        }
        numVirtualTokens = try integer("num_virtual_tokens")
        numLayers = try integer("num_layers")
        tokenDim = try integer("token_dim")
        numAttentionHeads = try integer("num_attention_heads")
        numTransformerSubmodules = try integer("num_transformer_submodules")
        baseModelNameOrPath = json["base_model_name_or_path"]?.stringValue
    }

    /// PEFT's `get_pattern_key`: the first pattern key `k` for which the module name matches
    /// `(.*\.)?(k)$` from its start.
    static func patternKey(_ keys: [String], moduleName: String) -> String? {
        for key in keys {
            guard let regex = try? NSRegularExpression(pattern: "^(.*\\.)?(\(key))$") else { continue }
            let range = NSRange(moduleName.startIndex..., in: moduleName)
            if regex.firstMatch(in: moduleName, range: range) != nil { return key }
        }
        return nil
    }

    /// Rank and scale PEFT gives a LoRA module (alpha/r, or alpha/√r with rsLoRA, after patterns).
    func loraRankAndScale(moduleName: String) -> (rank: Int, scale: Double) {
        let rankKey = Self.patternKey(rankPattern.map(\.key), moduleName: moduleName)
        let alphaKey = Self.patternKey(alphaPattern.map(\.key), moduleName: moduleName)
        let r = rankPattern.first { $0.key == rankKey }?.value ?? rank
        let alpha = alphaPattern.first { $0.key == alphaKey }?.value ?? loraAlpha
        return (r, useRSLoRA ? alpha / Double(r).squareRoot() : alpha / Double(r))
    }
}
