import Foundation

/// Canonical JSON text: object keys sorted by their UTF-8 bytes, no white space, integers as
/// integers, other numbers in the shortest form that reads back to the same double, strings with
/// only `"`, `\` and control characters escaped. Equal values give equal bytes, which keeps packs
/// deterministic.
extension StrictJSON {
    public func canonicalBytes() -> [UInt8] {
        var out: [UInt8] = []
        write(into: &out)
        return out
    }

    func write(into out: inout [UInt8]) {
        switch self {
        case .null: out += Array("null".utf8)
        case .bool(let value): out += Array((value ? "true" : "false").utf8)
        case .integer(let value): out += Array(String(value).utf8)
        case .number(let value):
            if value.isFinite, value == value.rounded(), abs(value) < 9.007_199_254_740_992e15 {
                out += Array(String(Int64(value)).utf8)
            } else {
                out += Array("\(value)".utf8)
            }
        case .string(let text): out += Array(SafetensorsWriter.jsonString(text).utf8)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (position, item) in items.enumerated() {
                if position > 0 { out.append(UInt8(ascii: ",")) }
                item.write(into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            for (position, member) in members.sorted(by: { Array($0.key.utf8).lexicographicallyPrecedes(Array($1.key.utf8)) }).enumerated() {
                if position > 0 { out.append(UInt8(ascii: ",")) }
                out += Array(SafetensorsWriter.jsonString(member.key).utf8)
                out.append(UInt8(ascii: ":"))
                member.value.write(into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// Converts a Codable value through JSONEncoder; used to put typed documents into headers.
    public static func encoding<T: Encodable>(_ value: T) throws -> StrictJSON {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try parse(Array(try encoder.encode(value)))
    }

    /// The value as JSONSerialization's objects, for rewriting a document in the layout
    /// JSONSerialization writes (keys sorted, indented) after the strict parser has read it.
    public var foundationObject: Any {
        switch self {
        case .null: NSNull()
        case .bool(let value): value
        case .integer(let value): value
        case .number(let value): value
        case .string(let text): text
        case .array(let items): items.map(\.foundationObject)
        case .object(let members): Dictionary(uniqueKeysWithValues: members.map { ($0.key, $0.value.foundationObject) })
        }
    }

    /// Decodes a value the strict parser has already read (so without duplicates or lost digits).
    public func decoded<T: Decodable>(as type: T.Type) throws -> T {
        try JSONDecoder().decode(type, from: Data(canonicalBytes()))
    }
}
