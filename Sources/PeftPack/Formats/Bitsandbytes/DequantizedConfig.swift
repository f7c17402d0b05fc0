/// A merge of a bitsandbytes base writes dequantized weights: its config.json must not keep the
/// base's `quantization_config`, or transformers would load the dense tensors as bnb layers and
/// fail on the missing quant states.
public enum DequantizedConfig {
    /// config.json text without its top-level `quantization_config` member, the rest unchanged
    /// (key order, spacing and number spellings as written). Text without the member is returned
    /// as it is.
    public static func removingQuantizationConfig(_ text: String) -> String {
        removingMember("quantization_config", from: text)
    }

    /// config.json text without its top-level member `name` (as removingQuantizationConfig).
    static func removingMember(_ name: String, from text: String) -> String {
        let bytes = Array(text.utf8)
        guard let key = topLevelKey(name, in: bytes), let valueEnd = valueEnd(in: bytes, from: key.valueStart) else {
            return text
        }
        // Remove the member with the comma that separates it from a neighbour: the one after it
        // (and the line it stood on), or, when it is the last member, the one before it.
        var start = key.start, end = valueEnd
        var after = end
        while after < bytes.count, isSpace(bytes[after]) { after += 1 }
        if after < bytes.count, bytes[after] == UInt8(ascii: ",") {
            end = after + 1
            var lineStart = start
            while lineStart > 0, bytes[lineStart - 1] == 0x20 || bytes[lineStart - 1] == 0x09 { lineStart -= 1 }
            if lineStart > 0, bytes[lineStart - 1] == 0x0A { start = lineStart - 1 }
        } else {
            var before = start - 1
            while before >= 0, isSpace(bytes[before]) { before -= 1 }
            if before >= 0, bytes[before] == UInt8(ascii: ",") { start = before }
        }
        return String(decoding: bytes[..<start] + bytes[end...], as: UTF8.self)
    }

    static func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 }

    /// The position of `"name"` as a key of the outermost object, and where its value starts.
    static func topLevelKey(_ name: String, in bytes: [UInt8]) -> (start: Int, valueStart: Int)? {
        memberKey(name, in: bytes, objectAt: 0)
    }

    /// The position of `"name"` as a key of the object whose `{` is at `start` (its members only,
    /// not those of objects nested in it), and where its value starts.
    static func memberKey(_ name: String, in bytes: [UInt8], objectAt start: Int) -> (start: Int, valueStart: Int)? {
        let quoted = Array("\"\(name)\"".utf8)
        var depth = 0, index = start
        while index < bytes.count {
            switch bytes[index] {
            case UInt8(ascii: "\""):
                if depth == 1, bytes[index...].starts(with: quoted) {
                    var colon = index + quoted.count
                    while colon < bytes.count, isSpace(bytes[colon]) { colon += 1 }
                    if colon < bytes.count, bytes[colon] == UInt8(ascii: ":") {
                        var value = colon + 1
                        while value < bytes.count, isSpace(bytes[value]) { value += 1 }
                        return (index, value)
                    }
                }
                index = stringEnd(in: bytes, from: index)
                continue
            case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
                if depth == 0 { return nil }
            default: break
            }
            index += 1
        }
        return nil
    }

    /// The index just past the string that starts at `start` (a quote).
    static func stringEnd(in bytes: [UInt8], from start: Int) -> Int {
        var index = start + 1
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "\\") { index += 2; continue }
            if bytes[index] == UInt8(ascii: "\"") { return index + 1 }
            index += 1
        }
        return bytes.count
    }

    /// The index just past the JSON value that starts at `start`.
    static func valueEnd(in bytes: [UInt8], from start: Int) -> Int? {
        guard start < bytes.count else { return nil }
        if bytes[start] == UInt8(ascii: "\"") { return stringEnd(in: bytes, from: start) }
        var depth = 0, index = start
        while index < bytes.count {
            switch bytes[index] {
            case UInt8(ascii: "\""):
                index = stringEnd(in: bytes, from: index)
                continue
            case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                if depth == 0 { return index }
                depth -= 1
                if depth == 0 { return index + 1 }
            case UInt8(ascii: ","):
                if depth == 0 { return index }
            default: break
            }
            index += 1
        }
        return depth == 0 ? index : nil
    }
}
