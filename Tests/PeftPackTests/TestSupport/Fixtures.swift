import Foundation
@testable import PeftPack

/// Paths of the committed reference data made by fixtures/generate.py.
enum Fixtures {
    static let repositoryRoot: URL = {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url }
        }
        fatalError("Package.swift not found above \(#filePath)")
    }()

    static let data = repositoryRoot.appendingPathComponent("fixtures/data")

    static func path(_ relative: String) -> String {
        data.appendingPathComponent(relative).path
    }

    struct ManifestTensor: Decodable {
        var dtype: String
        var shape: [Int]
        var xxh3_64: String
    }

    struct ManifestFile: Decodable {
        var format: String
        var metadata: [String: String]?
        var tensors: [String: ManifestTensor]
    }

    /// fixtures/manifest.json: per committed file, each tensor's dtype, shape and XXH3-64 as the
    /// Python stack computed them.
    static let manifest: [String: ManifestFile] = {
        struct Root: Decodable { var files: [String: ManifestFile] }
        let url = repositoryRoot.appendingPathComponent("fixtures/manifest.json")
        return try! JSONDecoder().decode(Root.self, from: Data(contentsOf: url)).files
    }()

    static func temporaryDirectory() -> String {
        let path = NSTemporaryDirectory() + "peftpack-test-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}
