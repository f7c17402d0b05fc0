import Foundation
import Testing
@testable import PeftPack

/// Importing a pack copies its tensors in a fixed order, so the same inputs give the same bytes in
/// every process. The copy followed each module's tensor dictionary, whose order Swift seeds per
/// process: three imports of one pack under a new name gave three different files (58218, 58226
/// and 58223 bytes).
@Suite struct PackImportOrderTests {
    @Test func importingAPackGivesTheSameBytesInEveryProcess() throws {
        let folder = Fixtures.temporaryDirectory()
        let pack = folder + "/lora.peftpack"
        let made = try CLI.run(["import", Fixtures.path("cases/llama_lora/adapter"), "-o", pack])
        #expect(made.status == 0, "\(made.stderr)")
        var files: [Data] = []
        for run in 0..<4 {
            let output = folder + "/renamed\(run).peftpack"
            let result = try CLI.run(["import", pack, "-o", output, "--name", "other"])
            #expect(result.status == 0, "\(result.stderr)")
            files.append(try Data(contentsOf: URL(fileURLWithPath: output)))
            // Each module's tensors in role order (A before B).
            let names = try PackReader(path: output).tensors.map(\.name)
            let modules = Dictionary(grouping: names.indices, by: { names[$0].split(separator: "/").dropLast().joined(separator: "/") })
            for (module, positions) in modules {
                #expect(positions.map { names[$0] } == positions.map { names[$0] }.sorted(), "\(module)")
            }
        }
        #expect(Set(files).count == 1)
    }
}
