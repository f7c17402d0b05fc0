import Foundation
@testable import PeftPack

/// fixtures/data/families/<name>/ (fixturegen/families.py): a base, its full fine-tune and PEFT
/// cases per model family, found by listing so that a new family needs only its fixtures.
enum FamilyFixtures {
    static let root = Fixtures.data.appendingPathComponent("families")

    static func folders(_ url: URL) -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []
        return entries.filter { entry in
            var directory: ObjCBool = false
            return FileManager.default.fileExists(atPath: url.appendingPathComponent(entry).path, isDirectory: &directory)
                && directory.boolValue
        }.sorted()
    }

    static let families: [String] = folders(root)

    /// "<family>/<case>" for every case of every family.
    static let cases: [String] = families.flatMap { family in
        folders(root.appendingPathComponent("\(family)/cases")).map { "\(family)/\($0)" }
    }

    static func base(_ family: String) -> String { root.appendingPathComponent("\(family)/model").path }
    static func finetuned(_ family: String) -> String { root.appendingPathComponent("\(family)/model-ft").path }
    static func finetunedReference(_ family: String) -> String { finetuned(family) + ".ref.safetensors" }

    static func family(of familyCase: String) -> String { String(familyCase.split(separator: "/")[0]) }
    static func caseName(of familyCase: String) -> String { String(familyCase.split(separator: "/")[1]) }

    static func adapter(_ familyCase: String) -> String {
        root.appendingPathComponent("\(family(of: familyCase))/cases/\(caseName(of: familyCase))/adapter").path
    }

    static func reference(_ familyCase: String) -> String {
        let name = caseName(of: familyCase)
        return root.appendingPathComponent("\(family(of: familyCase))/cases/\(name)/\(name).ref.safetensors").path
    }

    /// A model folder loaded by the runtime, with `edit` applied to its config first.
    static func model(_ folder: String, edit: (inout ModelConfig) -> Void = { _ in }) throws -> TransformerModel {
        var config = try ModelConfig.load(contentsOf: URL(fileURLWithPath: folder).appendingPathComponent("config.json"))
        edit(&config)
        return try TransformerModel.load(config: config, weights: try Checkpoint(path: folder))
    }

    /// The largest |output − expected| relative to the expected output's largest magnitude.
    static func relativeError(_ folder: String, against key: String, of reference: String,
                              edit: (inout ModelConfig) -> Void = { _ in }) throws -> Double {
        let file = try ReferenceFile(path: reference)
        let output = try model(folder, edit: edit).forward(inputIds: try file.inputRows())
        return RuntimeFixtures.relativeError(output, try file.output(key))
    }

    /// `peftpack import <adapter> --base <base>` into a fresh folder.
    static func importedPack(_ familyCase: String) throws -> String {
        let pack = Fixtures.temporaryDirectory() + "/\(caseName(of: familyCase)).peftpack"
        try CLI.succeed(["import", adapter(familyCase), "--base", base(family(of: familyCase)), "-o", pack, "--quiet"])
        return pack
    }

    /// `peftpack verify --reference` at relative tolerance `rtol` only, as its JSON report.
    static func verify(_ pack: String, base: String, reference: String, key: String = "output_adapter",
                       rtol: Double) throws -> [String: Any] {
        let result = try CLI.run(["verify", pack, "--base", base, "--reference", reference, "--key", key,
                                  "--atol", "0", "--rtol", "\(rtol)", "--json"])
        return try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any] ?? [:]
    }

    /// The first comparison of a verify report: passed, and max |error| / max |reference|.
    static func firstComparison(_ report: [String: Any]) -> (passed: Bool, relative: Double) {
        guard let comparison = (report["comparisons"] as? [[String: Any]])?.first,
              let error = comparison["maxAbsError"] as? Double, let scale = comparison["referenceScale"] as? Double else {
            return (false, .infinity)
        }
        return ((comparison["passed"] as? Bool) ?? false, error / scale)
    }
}

extension CLI {
    /// Runs peftpack and fails with its stderr when it exits non-zero.
    @discardableResult
    static func succeed(_ arguments: [String]) throws -> Result {
        let result = try run(arguments)
        guard result.status == 0 else {
            throw CLIFailure(description: "peftpack \(arguments.joined(separator: " ")) exited \(result.status): \(result.stderr)")
        }
        return result
    }

    struct CLIFailure: Error, CustomStringConvertible {
        let description: String
    }
}
