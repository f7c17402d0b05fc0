import Foundation

/// The parts of PEFT's adapter_config.json that decide what the saved tensors mean.
public struct PeftConfig {
    var peftType: String
    var rank: Int
    var loraAlpha: Double
    var useRSLoRA: Bool
    var useDoRA: Bool
    /// Insertion order matters: PEFT takes the first pattern that matches.
    var rankPattern: [(key: String, value: Int)]
    /// AdaLoRA: its rank_pattern (module + ".lora_E" → the kept singular values as booleans),
    /// as each module's kept rank, and the init_r every layer was built with.
    var keptRanks: [String: Int] = [:]
    var initialRank: Int?
    var alphaPattern: [(key: String, value: Double)]
    var feedforwardModules: [String]
    /// IA3 `feedforward_modules` given as one string: a regex PEFT full-matches.
    var feedforwardPattern: String?
    /// Which modules PEFT adapts (LoRA and IA3).
    var targetRules: PeftTargetRules?
    /// LoRA `trainable_token_indices`: per embedding-module name (nil: the model's input
    /// embedding), the rows PEFT trains in place.
    var trainableTokenIndices: [(module: String?, rows: [Int])]?
    var numVirtualTokens: Int?
    var numLayers: Int?
    var tokenDim: Int?
    var numAttentionHeads: Int?
    var numTransformerSubmodules: Int?
    var baseModelNameOrPath: String?

    public init(text: String, file: String) throws {
        func fail(_ problem: String) -> InputError { InputError(file: file, problem: problem) }
        let json = try InputError.parseConfig(text, file: file)
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
        // LoHa and LoKr name it alpha (their scale is alpha/r, patterns applied as for LoRA).
        let alphaKey = ["LOHA", "LOKR"].contains(type) ? "alpha" : "lora_alpha"
        loraAlpha = try number(json[alphaKey], alphaKey) ?? 8
        useRSLoRA = try bool("use_rslora")
        useDoRA = try bool("use_dora")
        // Checked as PEFT types it, but PEFT ignores its value: the module type decides (ModuleLayoutRule).
        _ = try bool("fan_in_fan_out")
        if type == "ADALORA" {
            rankPattern = []
            initialRank = try integer("init_r") ?? 12
            for member in json["rank_pattern"]?.objectMembers ?? [] {
                guard let flags = member.value.arrayValue, flags.allSatisfy({ if case .bool = $0 { true } else { false } }) else {
                    throw fail("rank_pattern[\(member.key)] is not a list of true/false (AdaLoRA's kept singular values)")
                }
                keptRanks[member.key] = flags.filter { $0 == .bool(true) }.count
            }
        } else {
            rankPattern = try (json["rank_pattern"]?.objectMembers ?? []).map { member in
                guard let value = member.value.integerValue else { throw fail("rank_pattern[\(member.key)] is not an integer") }
                return (member.key, Int(value))
            }
        }
        alphaPattern = try (json["alpha_pattern"]?.objectMembers ?? []).map { member in
            (member.key, try number(member.value, "alpha_pattern[\(member.key)]") ?? 0)
        }
        switch json["feedforward_modules"] {
        case .string(let single)?:
            feedforwardModules = []
            feedforwardPattern = single
        case .array(let items)?: feedforwardModules = items.compactMap(\.stringValue)
        default: feedforwardModules = []
        }
        if ["LORA", "IA3", "LOHA", "LOKR", "ADALORA", "VERA"].contains(type) { targetRules = try PeftTargetRules(json: json, fail: fail) }
        trainableTokenIndices = try Self.tokenIndices(json["trainable_token_indices"], fail: fail)
        numVirtualTokens = try integer("num_virtual_tokens")
        numLayers = try integer("num_layers")
        tokenDim = try integer("token_dim")
        numAttentionHeads = try integer("num_attention_heads")
        numTransformerSubmodules = try integer("num_transformer_submodules")
        baseModelNameOrPath = json["base_model_name_or_path"]?.stringValue
    }

    static func tokenIndices(_ value: StrictJSON?, fail: (String) -> InputError) throws -> [(module: String?, rows: [Int])]? {
        func rows(_ list: StrictJSON, _ label: String) throws -> [Int] {
            guard let items = list.arrayValue else { throw fail("\(label) is not a list of token ids") }
            let rows = try items.map { item -> Int in
                guard let row = item.integerValue, row >= 0 else { throw fail("\(label) holds \(item), not a token id") }
                return Int(row)
            }
            // index_copy with a repeated index keeps an unspecified one of the values.
            guard Set(rows).count == rows.count else { throw fail("\(label) names a token id twice") }
            return rows
        }
        switch value {
        case nil, .null?: return nil
        case let list? where list.arrayValue != nil: return [(nil, try rows(list, "trainable_token_indices"))]
        case .object(let members)?:
            return try members.map { ($0.key, try rows($0.value, "trainable_token_indices[\($0.key)]")) }
        default: throw fail("trainable_token_indices is neither a list nor an object of lists")
        }
    }

    /// Whether PEFT's IA3 treats `module` as feed-forward (its input side is scaled).
    func isFeedforward(_ module: String) -> Bool {
        if let feedforwardPattern { return PythonRegex.fullMatch(feedforwardPattern, module) }
        return feedforwardModules.contains { module.hasSuffix($0) }
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
        let (r, alpha) = rankAndAlpha(moduleName: moduleName)
        return (r, useRSLoRA ? alpha / Double(r).squareRoot() : alpha / Double(r))
    }

    /// A module's r and alpha after rank_pattern and alpha_pattern (the first pattern that matches).
    func rankAndAlpha(moduleName: String) -> (rank: Int, alpha: Double) {
        let rankKey = Self.patternKey(rankPattern.map(\.key), moduleName: moduleName)
        let alphaKey = Self.patternKey(alphaPattern.map(\.key), moduleName: moduleName)
        return (rankPattern.first { $0.key == rankKey }?.value ?? rank, alphaPattern.first { $0.key == alphaKey }?.value ?? loraAlpha)
    }
}
