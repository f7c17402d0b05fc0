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
        #expect(throws: InputError.self) { try [UInt8](repeating: 0, count: 3).withUnsafeBytes { try stream.append($0) } }
        stream.abandon()
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder).isEmpty)
    }

    /// Expected values printed by transformers' `convert_file_size_to_int` (a lowercase final "b"
    /// means bits there); fractions and unknown units raise there, and negative sizes are refused.
    @Test func fileSizesParseAsTransformersDoes() {
        let expected: [(String, Int)] = [
            ("500MB", 500_000_000), ("2GB", 2_000_000_000), ("1GiB", 1_073_741_824), ("5Gb", 625_000_000),
            ("7kb", 875), ("3KiB", 3072), ("1mib", 1_048_576), (" 12 MB", 12_000_000), ("4096", 4096),
        ]
        for (text, bytes) in expected {
            #expect(FileSize.parse(text) == bytes, "\(text)")
        }
        for text in ["lots", "1.5GB", "-1MB", "GB", "1TB", "99999999999999999999GB"] {
            #expect(FileSize.parse(text) == nil, "\(text)")
        }
    }

    /// Bytes `save_file` wrote for {"é": ones(2) F32, "w": arange(3) I16} with metadata whose keys it
    /// happened to list unsorted (its order changes from run to run); reading and rewriting keeps the
    /// file's order and so reproduces the file.
    @Test func rewriteKeepsTheFilesMetadataOrder() throws {
        let header = #"{"__metadata__":{"note":"x","format":"pt","a\"b":"c\nd"},"é":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"I16","shape":[3],"data_offsets":[8,14]}}   "#
        var length = UInt64(header.utf8.count).littleEndian
        let original = withUnsafeBytes(of: &length) { Array($0) } + Array(header.utf8) + [0, 0, 128, 63, 0, 0, 128, 63, 0, 0, 1, 0, 2, 0]
        let folder = Fixtures.temporaryDirectory()
        _ = FileManager.default.createFile(atPath: folder + "/in.safetensors", contents: Data(original))
        let file = try SafetensorsFile(path: folder + "/in.safetensors")
        #expect(file.metadata == ["note": "x", "format": "pt", "a\"b": "c\nd"])
        var tensors: [String: HostTensor] = [:]
        for name in file.names { tensors[name] = try file.tensor(name) }
        try SafetensorsWriter.write(tensors, metadataEntries: file.metadataEntries, to: folder + "/out.safetensors")
        #expect(try Data(contentsOf: URL(fileURLWithPath: folder + "/out.safetensors")) == Data(original))
    }

    /// Expected split printed by huggingface_hub's `split_state_dict_into_shards_factory` for U8
    /// tensors of these sizes and a 10-byte limit: oversized tensors get their own shard at once.
    @Test func shardSplitMatchesHuggingfaceHub() {
        let sizes = [3, 12, 4, 5, 2, 11, 1, 0, 6]
        let infos = sizes.enumerated().map { TensorInfo(name: "t\($0.offset)", dtype: .u8, shape: [$0.element]) }
        let split = CheckpointWriter.planShards(infos, maxShardSize: 10).map { $0.map(\.name) }
        #expect(split == [["t1"], ["t0", "t2"], ["t5"], ["t3", "t4", "t6", "t7"], ["t8"]])
    }

    /// huggingface_hub's `save_torch_state_dict` split the roundtrip tensors (in the order its index
    /// lists them) with a 256-byte limit; the same split and the same shard bytes come out here.
    @Test func roundtripShardsMatchHuggingfaceHub() throws {
        let folder = Fixtures.path("tensorio/roundtrip_sharded")
        let indexJSON = try StrictJSON.parse(Array(Data(contentsOf: URL(fileURLWithPath: folder + "/" + Checkpoint.indexFileName))))
        let order = try #require(indexJSON["weight_map"]?.objectMembers).map(\.key)
        let source = try Checkpoint(path: folder)
        let output = Fixtures.temporaryDirectory()
        let written = try CheckpointWriter.write(folder: output, tensors: order.map { source.info($0)! }, metadata: ["format": "pt"],
                                                 maxShardSize: 256) { info, sink in try source.withBytes(info.name, sink) }
        #expect(written == source.shardFiles + [Checkpoint.indexFileName])
        for shard in source.shardFiles {
            #expect(try Data(contentsOf: URL(fileURLWithPath: output + "/" + shard)) == Data(contentsOf: URL(fileURLWithPath: folder + "/" + shard)), "\(shard)")
        }
        let reread = try Checkpoint(path: output)
        #expect(reread.indexMetadata?["total_size"] == indexJSON["metadata"]?["total_size"]?.integerValue.map(String.init))
        for name in order { #expect(reread.shardOf(name) == source.shardOf(name), "\(name)") }
    }

    /// transformers' `save_pretrained(max_shard_size="100KB")` wrote llama-tiny-bf16; writing its
    /// tensors with the same split reproduces every shard and the index byte for byte.
    @Test func shardedModelRewriteIsByteIdenticalToTransformers() throws {
        let folder = Fixtures.path("models/llama-tiny-bf16")
        let source = try Checkpoint(path: folder)
        let shards = source.shardFiles.map { file in source.names.filter { source.shardOf($0) == file }.map { source.info($0)! } }
        let metadata = try source.file(forTensor: source.names[0]).metadata
        let output = Fixtures.temporaryDirectory()
        let written = try CheckpointWriter.write(folder: output, shards: shards, metadata: metadata) { info, sink in
            try source.withBytes(info.name, sink)
        }
        for file in written {
            #expect(try Data(contentsOf: URL(fileURLWithPath: output + "/" + file)) == Data(contentsOf: URL(fileURLWithPath: folder + "/" + file)), "\(file)")
        }
    }

    @Test func failedShardedWriteLeavesNoFiles() throws {
        let folder = Fixtures.temporaryDirectory()
        let infos = (0..<3).map { TensorInfo(name: "t\($0)", dtype: .f32, shape: [4]) }
        struct ProviderFailed: Error {}
        #expect(throws: ProviderFailed.self) {
            try CheckpointWriter.write(folder: folder, tensors: infos, metadata: nil, maxShardSize: 16) { info, sink in
                if info.name == "t2" { throw ProviderFailed() }
                try [UInt8](repeating: 0, count: 16).withUnsafeBytes(sink)
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder).isEmpty)
    }

    @Test func indexStringsAreEscapedAsPythonJSON() {
        #expect(CheckpointWriter.pythonJSONString("é\"\u{1F600}\n") == #""\u00e9\"\ud83d\ude00\n""#)
    }
}
