import Foundation

/// Which modules PEFT 0.21 puts an adapter layer on, as adapter_config.json states it. PEFT loads a
/// saved LoRA/IA3 factor only into a layer it created, so a factor on any other module is silently
/// dropped by `PeftModel.from_pretrained` (load_state_dict with strict=False). Reproduces
/// `check_target_module_exists` (peft/tuners/tuners_utils.py) and the `all-linear` shorthand of
/// `_maybe_include_all_linear_layers`, on the module names the saved keys carry.
struct PeftTargetRules {
    enum Targets {
        /// A list: a module matches by its exact name or a `.`-suffix.
        case names([String])
        /// A string: a Python regex full-matched against the module name.
        case pattern(String)
        /// "all-linear": every nn.Linear/Conv1D but the output head.
        case allLinear
        /// null: PEFT fills the list from its per-model_type defaults, which the adapter folder
        /// does not record; the saved keys are then taken as the targets.
        case unspecified
    }

    enum Exclusions {
        case none
        case names([String])
        case pattern(String)
    }

    var targets: Targets
    var exclusions: Exclusions
    var layersToTransform: [Int]?
    var layersPattern: [String]
    var modulesToSave: [String]
    var isSequenceClassification: Bool
    /// `ensure_weight_tying` with the embedding among target_modules: PEFT also adapts the modules
    /// tied to the embedding (`target_modules_to_tie`, filled at load time and never saved). A folder
    /// holding such factors was trained on a tied base, where that module is the output head.
    var modulesTiedToEmbedding: [String]

    init(json: StrictJSON, fail: (String) -> InputError) throws {
        func strings(_ key: String) throws -> [String]? {
            switch json[key] {
            case nil, .null?: return nil
            case .string(let single)?: return [single]
            case .array(let items)?:
                return try items.map { item in
                    guard let text = item.stringValue else { throw fail("\(key) holds a non-string entry") }
                    return text
                }
            default: throw fail("\(key) is neither a string nor a list of strings")
            }
        }
        switch json["target_modules"] {
        case nil, .null?: targets = .unspecified
        case .string(let text)? where text.lowercased() == "all-linear": targets = .allLinear
        case .string(let text)?: targets = .pattern(try Self.checked(text, "target_modules", fail))
        default: targets = .names(try strings("target_modules") ?? [])
        }
        switch json["exclude_modules"] {
        case nil, .null?: exclusions = .none
        case .string(let text)?: exclusions = .pattern(try Self.checked(text, "exclude_modules", fail))
        default: exclusions = .names(try strings("exclude_modules") ?? [])
        }
        switch json["layers_to_transform"] {
        case nil, .null?: layersToTransform = nil
        case .integer(let single)?: layersToTransform = [Int(single)]
        case .array(let items)?:
            layersToTransform = try items.map { item in
                guard let index = item.integerValue else { throw fail("layers_to_transform holds a non-integer entry") }
                return Int(index)
            }
            // PEFT treats an empty list as "every layer".
            if layersToTransform?.isEmpty == true { layersToTransform = nil }
        default: throw fail("layers_to_transform is neither an integer nor a list of integers")
        }
        layersPattern = try (strings("layers_pattern") ?? []).map { try Self.checked($0, "layers_pattern", fail) }
        modulesToSave = try (strings("modules_to_save") ?? []).map { try Self.checked($0, "modules_to_save", fail) }
        isSequenceClassification = json["task_type"]?.stringValue == "SEQ_CLS"
        modulesTiedToEmbedding = json["ensure_weight_tying"] == .bool(true) && Self.targetsEmbedding(targets) ? ["lm_head"] : []
        if let parameters = try strings("target_parameters"), !parameters.isEmpty {
            throw fail("target_parameters (LoRA on bare parameters, e.g. MoE experts) is not supported")
        }
    }

    /// PEFT's `_check_tied_modules`: a list entry whose last segment is an embedding layer name,
    /// or a pattern full-matching one of those names.
    private static func targetsEmbedding(_ targets: Targets) -> Bool {
        let embeddingLayerNames = ["embed_tokens", "lm_head"]
        switch targets {
        case .names(let names): return names.contains { embeddingLayerNames.contains(String($0.split(separator: ".").last ?? "")) }
        case .pattern(let pattern): return embeddingLayerNames.contains { PythonRegex.fullMatch(pattern, $0) }
        case .allLinear, .unspecified: return false
        }
    }

    private static func checked(_ pattern: String, _ key: String, _ fail: (String) -> InputError) throws -> String {
        guard (try? NSRegularExpression(pattern: pattern)) != nil else {
            throw fail("\(key) \"\(pattern)\" is not a regular expression peftpack can read")
        }
        return pattern
    }

    /// Why PEFT creates no adapter layer on `module`, or nil when it does. `isEmbedding`: the saved
    /// factors are lora_embedding_A/B, so the module is an nn.Embedding (never "linear").
    func whyNotTargeted(_ module: String, isEmbedding: Bool) -> String? {
        switch exclusions {
        case .none: break
        case .pattern(let pattern):
            if PythonRegex.fullMatch(pattern, module) { return "is excluded by exclude_modules \"\(pattern)\"" }
        case .names(let names):
            if let hit = names.first(where: { module == $0 || module.hasSuffix("." + $0) }) {
                return "is excluded by exclude_modules entry \"\(hit)\""
            }
        }
        // PEFT never adapts a module that modules_to_save copies, nor anything inside it.
        if let hit = modulesToSave.first(where: { PythonRegex.matchesAtStart("(^|.*\\.)\($0)($|\\..*)", module) }) {
            return "lies in modules_to_save entry \"\(hit)\", which PEFT trains as a full copy instead"
        }
        if modulesTiedToEmbedding.contains(where: { module == $0 || module.hasSuffix("." + $0) }) { return nil }
        switch targets {
        case .unspecified:
            return nil
        case .allLinear:
            if isEmbedding { return "is an embedding, which target_modules \"all-linear\" does not cover" }
            let head = isSequenceClassification ? ["score", "classifier"] : ["lm_head", "embed_out"]
            if head.contains(module) { return "is the output head, which target_modules \"all-linear\" leaves out" }
            return nil
        case .pattern(let pattern):
            return PythonRegex.fullMatch(pattern, module) ? nil : "is not matched by target_modules \"\(pattern)\" (a regex PEFT full-matches against the module name)"
        case .names(let names):
            guard names.contains(where: { module == $0 || module.hasSuffix("." + $0) }) else {
                return "is not matched by target_modules \(Self.describe(names)) (exact names or .-suffixes)"
            }
            // PEFT reads layers_to_transform only when target_modules is a list, and only after
            // a name matched (and not for an exact full name: PEFT returns early on those).
            guard let layers = layersToTransform, !names.contains(module) else { return nil }
            guard let index = layerIndex(module) else {
                return "has no layer index for layers_to_transform \(layers) to select"
            }
            return layers.contains(index) ? nil : "is in layer \(index), not in layers_to_transform \(layers)"
        }
    }

    /// The first numbered path segment, found as PEFT finds it: `.*?\.[^.]*\.(\d+)\.` without
    /// layers_pattern, `(?:^|.*?\.)<pattern>\.(\d+)\.` with it (first pattern that matches).
    func layerIndex(_ module: String) -> Int? {
        let patterns = layersPattern.isEmpty ? [".*?\\.[^.]*\\.(\\d+)\\."] : layersPattern.map { "(?:^|.*?\\.)\($0)\\.(\\d+)\\." }
        for pattern in patterns {
            if let group = PythonRegex.firstGroupAtStart(pattern, module) { return Int(group) }
        }
        return nil
    }

    static func describe(_ names: [String]) -> String {
        "[" + names.joined(separator: ", ") + "]"
    }
}

/// Python `re` calls on module names through ICU, whose backtracking order for the constructs
/// PEFT uses (lazy `.*?`, alternation, groups) is Perl's, as Python's is.
enum PythonRegex {
    /// `re.fullmatch`: some way of matching must span the whole name, not just the first one found.
    static func fullMatch(_ pattern: String, _ text: String) -> Bool {
        matchesAtStart("(?:\(pattern))\\z", text)
    }

    /// `re.match`: a match that starts at the beginning.
    static func matchesAtStart(_ pattern: String, _ text: String) -> Bool {
        firstMatch(pattern, text) != nil
    }

    /// Group 1 of `re.match`.
    static func firstGroupAtStart(_ pattern: String, _ text: String) -> String? {
        guard let match = firstMatch(pattern, text), match.numberOfRanges > 1,
              let range = Range(match.range(at: 1), in: text) else { return nil }
        return String(text[range])
    }

    private static func firstMatch(_ pattern: String, _ text: String) -> NSTextCheckingResult? {
        guard let regex = try? NSRegularExpression(pattern: pattern) else { return nil }
        return regex.firstMatch(in: text, options: .anchored, range: NSRange(text.startIndex..., in: text))
    }
}
