import Foundation
import Testing
@testable import PeftPack

/// Every safetensors file the Python stack wrote reads back bit-exactly: names, dtypes, shapes and
/// the XXH3-64 of each tensor's bytes as fixtures/manifest.json recorded them.
@Suite struct SafetensorsReadTests {
    static let safetensorsFiles = Fixtures.manifest.filter { $0.value.format == "safetensors" }.keys.sorted()

    @Test(arguments: safetensorsFiles)
    func fixtureFileReadsBackBitExactly(relativePath: String) throws {
        let expected = Fixtures.manifest[relativePath]!
        let file = try SafetensorsFile(path: Fixtures.path(relativePath))
        #expect(Set(file.names) == Set(expected.tensors.keys))
        #expect(file.metadata == expected.metadata)
        for (name, tensor) in expected.tensors {
            let info = try #require(file.info(name))
            #expect(info.dtype.rawValue == tensor.dtype, "\(name)")
            #expect(info.shape == tensor.shape, "\(name)")
            let hash = try file.withBytes(name) { XXH3.hash64($0) }
            #expect(XXH3.hex(hash) == tensor.xxh3_64, "\(relativePath): \(name)")
        }
    }

    @Test func manifestCoversEverySafetensorsFixture() {
        #expect(Self.safetensorsFiles.count >= 40)
    }

    @Test func shardedSetReadsLikeTheSingleFile() throws {
        let single = try SafetensorsFile(path: Fixtures.path("tensorio/roundtrip.safetensors"))
        let sharded = try Checkpoint(path: Fixtures.path("tensorio/roundtrip_sharded"))
        #expect(sharded.shardFiles.count == 3)
        #expect(Set(sharded.names) == Set(single.names))
        for name in single.names {
            #expect(try sharded.tensor(name).bytes == single.tensor(name).bytes, "\(name)")
            #expect(sharded.info(name) == single.info(name))
        }
    }

    @Test func modelFolderOpensItsSingleFileOrIndex() throws {
        let single = try Checkpoint(path: Fixtures.path("models/llama-tiny"))
        #expect(single.shardFiles == ["model.safetensors"])
        #expect(single.configText?.contains("\"llama\"") == true)
        let sharded = try Checkpoint(path: Fixtures.path("models/llama-tiny-bf16"))
        #expect(sharded.shardFiles.count == 3)
        #expect(Set(sharded.names) == Set(single.names))
        #expect(sharded.info("model.layers.0.self_attn.q_proj.weight")?.dtype == .bf16)
    }
}
