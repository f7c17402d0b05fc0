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

    /// A fresh folder under the system temporary directory, removed when the test process exits.
    static func temporaryDirectory() -> String {
        let path = NSTemporaryDirectory() + "peftpack-test-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        TemporaryFolders.shared.register(path)
        return path
    }
}

/// Folders the tests made, deleted at exit so repeated runs do not fill the temporary directory.
final class TemporaryFolders: @unchecked Sendable {
    static let shared = TemporaryFolders()
    private let lock = NSLock()
    private var paths: [String] = []

    private init() {
        atexit { TemporaryFolders.shared.removeAll() }
    }

    func register(_ path: String) {
        lock.lock()
        paths.append(path)
        lock.unlock()
    }

    func removeAll() {
        lock.lock()
        defer { lock.unlock() }
        for path in paths { try? FileManager.default.removeItem(atPath: path) }
        paths.removeAll()
    }
}
