import Foundation
@testable import PeftPack

/// The runtime on a family fixture with its config edited, for the family suites' negative
/// controls (FamilyFixtureTests finds the fixtures).
enum FamilyFixtures {
    /// A model folder loaded by the runtime, with `edit` applied to its config first.
    static func model(_ folder: String, edit: (inout ModelConfig) -> Void = { _ in }) throws -> TransformerModel {
        var config = try ModelConfig.load(contentsOf: URL(fileURLWithPath: folder).appendingPathComponent("config.json"))
        edit(&config)
        return try TransformerModel.load(config: config, weights: try Checkpoint(path: folder))
    }

    /// The largest |output − expected| relative to the expected output's largest magnitude, for
    /// output `key` of a reference file.
    static func relativeError(_ model: TransformerModel, against key: String, of reference: String) throws -> Double {
        let file = try ReferenceFile(path: reference)
        return RuntimeFixtures.relativeError(try model.forward(inputIds: try file.inputRows()), try file.output(key))
    }
}
