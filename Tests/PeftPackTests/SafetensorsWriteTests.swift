import Foundation
import Testing
@testable import PeftPack

@Suite struct SafetensorsWriteTests {
    /// Reading the file `safetensors.torch.save_file` wrote and writing its tensors back gives the
    /// same bytes: same order, same JSON, same padding.
    @Test func rewriteIsByteIdenticalToTheReferenceWriter() throws {
        let source = Fixtures.path("tensorio/roundtrip.safetensors")
        let file = try SafetensorsFile(path: source)
        var tensors: [String: HostTensor] = [:]
        for name in file.names { tensors[name] = try file.tensor(name) }
        let folder = Fixtures.temporaryDirectory()
        let output = folder + "/rewritten.safetensors"
        try SafetensorsWriter.write(tensors, metadata: file.metadata, to: output)
        let written = try Data(contentsOf: URL(fileURLWithPath: output))
        let original = try Data(contentsOf: URL(fileURLWithPath: source))
        #expect(written == original)
    }

    @Test func peftAdapterRewriteIsByteIdentical() throws {
        let source = Fixtures.path("cases/llama_rslora_patterns/adapter/adapter_model.safetensors")
        let file = try SafetensorsFile(path: source)
        var tensors: [String: HostTensor] = [:]
        for name in file.names { tensors[name] = try file.tensor(name) }
        let output = Fixtures.temporaryDirectory() + "/adapter_model.safetensors"
        try SafetensorsWriter.write(tensors, metadata: file.metadata, to: output)
        #expect(try Data(contentsOf: URL(fileURLWithPath: output)) == Data(contentsOf: URL(fileURLWithPath: source)))
    }

    @Test func shardedWriteReadsBackWithIndex() throws {
        let source = try Checkpoint(path: Fixtures.path("models/llama-tiny"))
        let folder = Fixtures.temporaryDirectory()
        let written = try CheckpointWriter.write(folder: folder, tensors: source.infos, metadata: ["format": "pt"],
                                                 maxShardSize: 100_000) { info, sink in
            try source.withBytes(info.name, sink)
        }
        #expect(written.last == Checkpoint.indexFileName)
        #expect(written.count > 2)
        let reread = try Checkpoint(path: folder)
        #expect(Set(reread.names) == Set(source.names))
        for name in source.names {
            #expect(try reread.tensor(name).bytes == source.tensor(name).bytes)
        }
    }

    @Test func leftoverTemporaryFilesAreNotCreatedOnFailure() throws {
        let folder = Fixtures.temporaryDirectory()
        let info = TensorInfo(name: "w", dtype: .f32, shape: [2])
        let stream = try SafetensorsWriter.FileStream(destination: folder + "/out.safetensors", tensors: [info], metadata: nil)
        #expect(throws: SafetensorsError.self) { try [UInt8](repeating: 0, count: 3).withUnsafeBytes { try stream.append($0) } }
        stream.abandon()
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder).isEmpty)
    }

    @Test func fileSizesParseAsTransformersDoes() {
        #expect(FileSize.parse("500MB") == 500_000_000)
        #expect(FileSize.parse("1GiB") == 1 << 30)
        #expect(FileSize.parse("2GB") == 2_000_000_000)
        #expect(FileSize.parse("4096") == 4096)
        #expect(FileSize.parse("lots") == nil)
    }
}
