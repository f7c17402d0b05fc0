/// One object of a config.json, parsed by the strict parser (duplicate keys refused: Python's json
/// keeps the last of two, JSONDecoder the first, so the two stacks would read different models)
/// and read field by field with typed accessors. A missing field and an explicit null both read as
/// nil, as in transformers; a field of the wrong type is a one-line `RuntimeError.invalidConfig`
/// naming its path ("rope_scaling.factor"). `Key` is the reader's `enum Key: String`, whose raw
/// values are the serialized names.
struct ConfigFields<Key: RawRepresentable<String>> {
    fileprivate let members: [(key: String, value: StrictJSON)]
    /// Dotted path of this object inside config.json; empty for the top level.
    private let path: String

    /// Parses config.json text; the top level must be an object.
    init(parsing bytes: [UInt8]) throws {
        let json: StrictJSON
        do {
            json = try StrictJSON.parse(bytes)
        } catch {
            throw RuntimeError.invalidConfig("not a JSON object (\(error))")
        }
        guard let members = json.objectMembers else { throw RuntimeError.invalidConfig("not a JSON object") }
        self.init(members: members, path: "")
    }

    fileprivate init(members: [(key: String, value: StrictJSON)], path: String) {
        self.members = members
        self.path = path
    }

    /// The same object read with another reader's keys: a family file declares the fields only it
    /// has in its own `enum Key: String`.
    func reading<Other>(_ keys: Other.Type) -> ConfigFields<Other> {
        ConfigFields<Other>(members: members, path: path)
    }

    /// Whether the key is present, even with a null value.
    func contains(_ key: Key) -> Bool {
        members.contains { $0.key == key.rawValue }
    }

    private func value(_ key: Key) -> StrictJSON? {
        guard let value = members.first(where: { $0.key == key.rawValue })?.value, value != .null else { return nil }
        return value
    }

    private func wrongType(_ key: Key) -> RuntimeError {
        wrongType(named: key.rawValue)
    }

    fileprivate func wrongType(named key: String) -> RuntimeError {
        .invalidConfig("field \(path.isEmpty ? key : path + "." + key) has the wrong type")
    }

    /// An integer; an integral number written with a fraction or exponent (`4096.0`, `4e3`) is
    /// accepted as Python's int() of a float would be.
    func int(_ key: Key) throws -> Int? {
        switch value(key) {
        case nil: return nil
        case .integer(let value)?: if let exact = Int(exactly: value) { return exact }
        case .number(let value)?: if let exact = Int(exactly: value) { return exact }
        default: break
        }
        throw wrongType(key)
    }

    /// A finite number (integers included).
    func double(_ key: Key) throws -> Double? {
        switch value(key) {
        case nil: return nil
        case .integer(let value)?: return Double(value)
        case .number(let value)? where value.isFinite: return value
        default: throw wrongType(key)
        }
    }

    func bool(_ key: Key) throws -> Bool? {
        guard let value = value(key) else { return nil }
        guard case .bool(let flag) = value else { throw wrongType(key) }
        return flag
    }

    func string(_ key: Key) throws -> String? {
        guard let value = value(key) else { return nil }
        guard let text = value.stringValue else { throw wrongType(key) }
        return text
    }

    func strings(_ key: Key) throws -> [String]? {
        guard let value = value(key) else { return nil }
        guard let items = value.arrayValue else { throw wrongType(key) }
        return try items.map { item in
            guard let text = item.stringValue else { throw wrongType(key) }
            return text
        }
    }

    /// An array of finite numbers (LongRoPE's factor lists).
    func doubles(_ key: Key) throws -> [Double]? {
        guard let value = value(key) else { return nil }
        guard let items = value.arrayValue else { throw wrongType(key) }
        return try items.map { item in
            switch item {
            case .integer(let value): return Double(value)
            case .number(let value) where value.isFinite: return value
            default: throw wrongType(key)
            }
        }
    }

    /// A nested object, read with the same accessors.
    func object<NestedKey>(_ key: Key, keys: NestedKey.Type) throws -> ConfigFields<NestedKey>? {
        guard let value = value(key) else { return nil }
        guard let members = value.objectMembers else { throw wrongType(key) }
        return ConfigFields<NestedKey>(members: members, path: path.isEmpty ? key.rawValue : path + "." + key.rawValue)
    }

    /// An object whose values are all strings (`id2label`).
    func stringMap(_ key: Key) throws -> [String: String]? {
        guard let nested = try object(key, keys: Key.self) else { return nil }
        return try Dictionary(uniqueKeysWithValues: nested.members.map { member in
            guard let text = member.value.stringValue else { throw nested.wrongType(named: member.key) }
            return (member.key, text)
        })
    }
}

/// A config.json field named by a string, for fields whose name is a family's choice
/// (`hidden_act` or `hidden_activation`, `rms_norm_eps` or `layer_norm_eps`).
struct ConfigFieldName: RawRepresentable, ExpressibleByStringLiteral, Sendable {
    let rawValue: String
    init(rawValue: String) { self.rawValue = rawValue }
    init(stringLiteral value: String) { rawValue = value }
}
