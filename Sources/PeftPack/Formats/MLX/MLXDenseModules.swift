/// Modules an MLX `--dtype same` merge writes dense (promoted): config.json must say so. mlx-lm's
/// loader (utils.py load_model's class_predicate) quantizes a module named in `quantization`
/// with that entry's parameters whether or not its scales are stored, so a promoted module with a
/// per-module entry would be built as a QuantizedLinear over a dense weight and fail to load;
/// `"<module>": false` keeps it a Linear, and changes nothing for a module without an entry.
enum MLXDenseModules {
    /// config.json text with `"<module>": false` in its `quantization` object and in the copy
    /// save_config writes as `quantization_config`: an existing entry's value replaced, a missing
    /// one put first; everything else as written.
    static func markingUnquantized(_ modules: [String], in text: String) -> String {
        var bytes = Array(text.utf8)
        for object in ["quantization", "quantization_config"] {
            for module in modules {
                guard let entry = DequantizedConfig.topLevelKey(object, in: bytes), bytes[entry.valueStart] == UInt8(ascii: "{") else { continue }
                bytes = marked(module, in: bytes, objectAt: entry.valueStart)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func marked(_ module: String, in bytes: [UInt8], objectAt start: Int) -> [UInt8] {
        let value = Array("false".utf8)
        if let member = DequantizedConfig.memberKey(module, in: bytes, objectAt: start),
           let end = DequantizedConfig.valueEnd(in: bytes, from: member.valueStart) {
            return Array(bytes[..<member.valueStart]) + value + Array(bytes[end...])
        }
        // Before the first member, repeating the spacing that precedes it (mlx-lm's indent).
        var first = start + 1
        while first < bytes.count, DequantizedConfig.isSpace(bytes[first]) { first += 1 }
        let member = Array("\"\(module)\": false".utf8)
        let empty = first < bytes.count && bytes[first] == UInt8(ascii: "}")
        let separator = empty ? [] : Array(",".utf8) + Array(bytes[(start + 1)..<first])
        return Array(bytes[..<first]) + member + separator + Array(bytes[first...])
    }
}
