/// A merge that promotes modules of a bitsandbytes base out of its quantization stores their
/// weights as plain tensors, so config.json's `quantization_config.llm_int8_skip_modules` must
/// name them: transformers otherwise builds a `Linear4bit` / `Linear8bitLt` there and quantizes
/// the plain weight while loading it.
///
/// How transformers 5.24 reads the list (quantizers/quantizers_utils.py `should_convert_module`,
/// for 4-bit and 8-bit alike): a module stays unquantized when an entry, as a regular expression,
/// matches its full name from the start up to a module boundary, or when its full name ends with
/// the entry; transformers 4 looked for `entry + "."` inside the name or the whole name. A module's
/// full name is therefore the entry both read as that module alone (its dots, wildcards to the
/// regular expression, stand where every other module's name has dots too), unless another
/// module's name ends with it, which `check` refuses.
///
/// A list replaces transformers' defaults: with `null` (what transformers writes when none was
/// given) it keeps the output embedding, tied weights and the last module unquantized
/// (`get_keys_to_not_convert`), but a list is taken as it is, so those defaults are written in first.
enum SkippedModulesConfig {
    static let key = "llm_int8_skip_modules"

    /// The entries already listed, or nil when the list is null or absent (transformers' defaults).
    static func listed(in text: String, file: String) throws -> [String]? {
        let config = try? StrictJSON.parse(Array(text.utf8))
        guard let quantization = config?["quantization_config"], quantization.objectMembers != nil else {
            throw InputError(file: file, problem: "has no quantization_config object, where the modules promoted out of the bitsandbytes quantization must be listed")
        }
        guard let value = quantization[key], value != .null else { return nil }
        guard let items = value.arrayValue, items.allSatisfy({ $0.stringValue != nil }) else {
            throw InputError(file: file, problem: "quantization_config.\(key) is not a list of module names")
        }
        return items.compactMap(\.stringValue)
    }

    /// Refuses an entry that transformers would also apply to a module whose weight stays
    /// quantized (that module would be built as a plain Linear and its packed codes loaded as weights).
    static func check(_ entries: [String], quantizedModules: [String], file: String) throws {
        for entry in entries {
            if let other = quantizedModules.first(where: { $0 == entry || $0.hasPrefix(entry + ".") || $0.hasSuffix(entry) }) {
                throw InputError(file: file, problem: "listing \(entry) in quantization_config.\(key) would also keep \(other), which stays quantized, out of the quantization when transformers loads the model")
            }
        }
    }

    /// config.json text whose `quantization_config.llm_int8_skip_modules` holds `entries`, the
    /// rest of the text unchanged. The list is written as transformers writes config.json
    /// (one entry a line, two more spaces of indent) when its member starts a line.
    static func setting(_ entries: [String], in text: String) -> String {
        let bytes = Array(text.utf8)
        guard let object = DequantizedConfig.topLevelKey("quantization_config", in: bytes),
              bytes[object.valueStart] == UInt8(ascii: "{") else { return text }
        if let member = DequantizedConfig.memberKey(key, in: bytes, objectAt: object.valueStart),
           let end = DequantizedConfig.valueEnd(in: bytes, from: member.valueStart) {
            let value = listText(entries, indent: lineIndent(before: member.start, in: bytes))
            return String(decoding: bytes[..<member.valueStart] + Array(value.utf8) + bytes[end...], as: UTF8.self)
        }
        // No such member: it goes first, laid out as the member it precedes.
        var first = object.valueStart + 1
        while first < bytes.count, DequantizedConfig.isSpace(bytes[first]) { first += 1 }
        let indent = lineIndent(before: first, in: bytes)
        let separator = bytes[first] == UInt8(ascii: "}") ? "" : "," + (indent.map { "\n" + $0 } ?? " ")
        let member = SafetensorsWriter.jsonString(key) + ": " + listText(entries, indent: indent) + separator
        return String(decoding: bytes[..<first] + Array(member.utf8) + bytes[first...], as: UTF8.self)
    }

    /// The spaces before `position` when only spaces precede it on its line.
    private static func lineIndent(before position: Int, in bytes: [UInt8]) -> String? {
        var start = position
        while start > 0, bytes[start - 1] == 0x20 || bytes[start - 1] == 0x09 { start -= 1 }
        guard start == 0 || bytes[start - 1] == 0x0A else { return nil }
        return String(decoding: bytes[start..<position], as: UTF8.self)
    }

    private static func listText(_ entries: [String], indent: String?) -> String {
        let items = entries.map(SafetensorsWriter.jsonString)
        guard let indent, !items.isEmpty else { return "[" + items.joined(separator: ", ") + "]" }
        return "[\n" + items.map { indent + "  " + $0 }.joined(separator: ",\n") + "\n" + indent + "]"
    }
}
