import Foundation
import Testing
@testable import PeftPack

/// The malformed-input corpus (Tests/PeftPackTests/Malformed, made by its make.py from the
/// fixtures): every input, through the command cases.json names, must exit 2 with one line on
/// stderr containing the expected fragment, write nothing, and leave the corpus untouched.
@Suite struct MalformedCorpusTests {
    struct Case: Decodable {
        var name: String
        var command: [String]
        var expect: String
    }

    static let folder = Fixtures.repositoryRoot.appendingPathComponent("Tests/PeftPackTests/Malformed")

    static let cases: [Case] = {
        let data = try! Data(contentsOf: folder.appendingPathComponent("cases.json"))
        return try! JSONDecoder().decode([Case].self, from: data)
    }()

    @Test func corpusHasAtLeastFortyInputs() {
        #expect(Self.cases.count >= 40)
    }

    @Test(arguments: cases.map(\.name))
    func refusedWithOneLineAndExitTwo(name: String) throws {
        let entry = Self.cases.first { $0.name == name }!
        let input = Self.folder.appendingPathComponent("inputs/\(name)").path
        let before = try CrashSafetyTests.hashes([input])
        let output = Fixtures.temporaryDirectory() + "/out" + (entry.command.first == "merge" ? "" : ".peftpack")
        let arguments = entry.command.map {
            $0.replacingOccurrences(of: "{input}", with: input).replacingOccurrences(of: "{output}", with: output)
                .replacingOccurrences(of: "{fixtures}", with: Fixtures.data.path)
        }
        let result = try CLI.run(arguments)
        #expect(result.status == 2, "\(name): exit \(result.status), stderr: \(result.stderr)")
        let lines = result.stderr.split(separator: "\n", omittingEmptySubsequences: true)
        #expect(lines.count == 1, "\(name): \(lines.count) lines on stderr: \(result.stderr)")
        #expect(result.stderr.contains(entry.expect), "\(name): expected “\(entry.expect)” in: \(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: output), "\(name): left \(output) behind")
        #expect(try CrashSafetyTests.hashes([input]) == before, "\(name): the input changed")
    }
}
