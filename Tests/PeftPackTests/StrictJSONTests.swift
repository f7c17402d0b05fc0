import Testing
@testable import PeftPack

/// The strict parser behind every JSON header: duplicate keys refused however large the object,
/// strings decoded exactly (escape-free ones take a fast path), integers kept exact to Int64's
/// limits and anything larger demoted to a double, as RFC 8259 leaves to the reader.
@Suite struct StrictJSONTests {
    static func parse(_ text: String) throws -> StrictJSON {
        try StrictJSON.parse(Array(text.utf8))
    }

    static func failure(_ bytes: [UInt8]) -> String? {
        do {
            _ = try StrictJSON.parse(bytes)
            return nil
        } catch {
            return "\(error)"
        }
    }

    static func object(keys: [String]) -> String {
        "{" + keys.enumerated().map { "\"\($1)\":\($0)" }.joined(separator: ",") + "}"
    }

    @Test(arguments: [1, 2, 15, 16, 17, 40, 200])
    func duplicateKeyIsFoundAtAnyPosition(size: Int) throws {
        let keys = (0..<size).map { "key\($0)" }
        let parsed = try Self.parse(Self.object(keys: keys))
        #expect(parsed.objectMembers?.map(\.key) == keys)
        // A repeat of the first key and of the last, so both the scan of small objects and the
        // set that takes over in large ones are exercised.
        for repeated in Set([keys[0], keys[size - 1]]) {
            let message = Self.failure(Array(Self.object(keys: keys + [repeated]).utf8))
            #expect(message?.contains("duplicate key \"\(repeated)\"") == true, "\(size) keys, \(repeated) repeated")
        }
    }

    @Test func stringsDecodeWithAndWithoutEscapes() throws {
        let cases: [(json: String, value: String)] = [
            (#""""#, ""),
            (#""plain ascii""#, "plain ascii"),
            (#""caf\u00e9""#, "café"),
            (#""café, raw UTF-8""#, "café, raw UTF-8"),
            (#""a\"b\\c\/d\n\t\r\b\f""#, "a\"b\\c/d\n\t\r\u{08}\u{0C}"),
            (#""\ud83d\ude00 after""#, "😀 after"),
            (#""before \ud83d\ude00""#, "before 😀"),
            (#""escape at the end\n""#, "escape at the end\n"),
        ]
        for (json, value) in cases {
            #expect(try Self.parse(json).stringValue == value, "\(json)")
        }
    }

    @Test func badStringsAreRefused() {
        let cases: [(bytes: [UInt8], reason: String)] = [
            (Array(#""unterminated"#.utf8), "unterminated string"),
            ([0x22, 0x61, 0xFF, 0x62, 0x22], "not valid UTF-8"),
            ([0x22, 0x5C, 0x6E, 0xC3, 0x28, 0x22], "not valid UTF-8"),
            ([0x22, 0x61, 0x0A, 0x22], "control character"),
            (Array(#""\ud83d alone""#.utf8), "expected \\u"),
            (Array(#""\ude00""#.utf8), "unpaired surrogate"),
            (Array(#""\x""#.utf8), "invalid escape"),
        ]
        for (bytes, reason) in cases {
            let message = Self.failure(bytes)
            #expect(message?.contains(reason) == true, "\(bytes): \(message ?? "accepted")")
        }
    }

    @Test func integersStayExactToInt64Limits() throws {
        #expect(try Self.parse("9223372036854775807") == .integer(.max))
        #expect(try Self.parse("-9223372036854775808") == .integer(.min))
        #expect(try Self.parse("-0") == .integer(0))
        #expect(try Self.parse("0") == .integer(0))
        #expect(try Self.parse("[1,-23,456]") == .array([.integer(1), .integer(-23), .integer(456)]))
        #expect(try Self.parse("9223372036854775808") == .number(9223372036854775808.0))
        #expect(try Self.parse("-9223372036854775809") == .number(-9223372036854775809.0))
        #expect(try Self.parse("1e2") == .number(100))
        #expect(try Self.parse("2.5") == .number(2.5))
        for bad in ["-", "01", "1.", ".5", "1e", "+1"] {
            #expect(Self.failure(Array(bad.utf8)) != nil, "\(bad)")
        }
    }
}
