import Foundation
@testable import PeftPack

/// Test-side access to fixtures/data (through the library's safetensors reader) and the
/// comparison of runtime outputs with the Python references.
enum RuntimeFixtures {
    static let root = Fixtures.data

    static func url(_ path: String) -> URL { root.appendingPathComponent(path) }

    static var available: Bool { FileManager.default.fileExists(atPath: url("models/llama-tiny/config.json").path) }

    static func config(_ model: String) throws -> ModelConfig {
        try ModelConfig.load(contentsOf: url("models/\(model)/config.json"))
    }

    /// The model directory's weights: model.safetensors, or the shards its index names.
    static func weights(_ directory: String) throws -> SafetensorsTestFiles {
        let base = url(directory)
        let index = base.appendingPathComponent("model.safetensors.index.json")
        guard FileManager.default.fileExists(atPath: index.path) else {
            return try SafetensorsTestFiles(files: [base.appendingPathComponent("model.safetensors")])
        }
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: index)) as! [String: Any]
        let shards = Set((json["weight_map"] as! [String: String]).values).sorted()
        return try SafetensorsTestFiles(files: shards.map { base.appendingPathComponent($0) })
    }

    static func model(_ directory: String) throws -> TransformerModel {
        let config = try ModelConfig.load(contentsOf: url(directory).appendingPathComponent("config.json"))
        return try TransformerModel.load(config: config, weights: weights(directory))
    }

    /// Case directories under fixtures/data/cases, sorted.
    static func caseNames() -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: url("cases").path)) ?? []
        return entries.sorted()
    }

    struct Reference {
        let inputIds: [[Int]]
        let outputBase: FloatTensor
        let outputAdapter: FloatTensor
        let metadata: [String: String]
    }

    static func reference(case name: String) throws -> Reference {
        let file = try SafetensorsTestFiles(files: [url("cases/\(name)/\(name).ref.safetensors")])
        let ids = try file.tensor("input_ids")!
        precondition(ids.dtype == .i64 && ids.shape.count == 2)
        let flat = ids.bytes.withUnsafeBytes { raw in
            (0..<ids.elementCount).map { Int(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self))) }
        }
        let columns = ids.shape[1]
        let rows = (0..<ids.shape[0]).map { Array(flat[$0 * columns..<($0 + 1) * columns]) }
        func output(_ key: String) throws -> FloatTensor {
            let tensor = try file.tensor(key)!
            return FloatTensor(shape: tensor.shape, values: tensor.floats())
        }
        return Reference(inputIds: rows, outputBase: try output("output_base"),
                         outputAdapter: try output("output_adapter"), metadata: file.metadata)
    }

    /// Largest absolute difference, relative to the reference's largest magnitude.
    static func relativeError(_ actual: FloatTensor, _ expected: FloatTensor) -> Double {
        precondition(actual.shape == expected.shape, "shape \(actual.shape) vs reference \(expected.shape)")
        var worst = 0.0, scale = 0.0
        for (a, e) in zip(actual.values, expected.values) {
            worst = max(worst, abs(Double(a) - Double(e)))
            scale = max(scale, abs(Double(e)))
        }
        return worst / scale
    }
}

/// Tensors of one or more safetensors files through the library's validating reader.
struct SafetensorsTestFiles: WeightProvider {
    private let files: [SafetensorsFile]

    init(files: [URL]) throws {
        self.files = try files.map { try SafetensorsFile(path: $0.path) }
    }

    var metadata: [String: String] { files.reduce(into: [:]) { $0.merge($1.metadata ?? [:]) { _, new in new } } }

    var names: [String] { files.flatMap(\.names) }

    func tensor(_ name: String) throws -> HostTensor? {
        guard let file = files.first(where: { $0.info(name) != nil }) else { return nil }
        return try file.tensor(name) as HostTensor
    }
}

/// Wraps a provider to hide or replace tensors, for loading-error tests.
struct EditedWeights: WeightProvider {
    let base: any WeightProvider
    var removed: Set<String> = []
    var added: [String: HostTensor] = [:]

    var names: [String] { base.names.filter { !removed.contains($0) } + added.keys }

    func tensor(_ name: String) throws -> HostTensor? {
        if let tensor = added[name] { return tensor }
        return removed.contains(name) ? nil : try base.tensor(name)
    }
}
