import Foundation
import Testing
@testable import PeftPack

/// peftpack's torch.save writer against torch.save itself: the pickle of a state dict must be
/// byte-identical to the one torch 2.13 wrote for the same tensors (fixtures/data/torchsave, from
/// fixturegen/torch_save.py), and an AdapterHub export must hold the pytorch_adapter.bin AdapterHub
/// writes (the adapter_bin fixtures, saved by adapters 1.3). Exact comparisons: both are
/// serializations of the same bits, no arithmetic is involved.
@Suite struct TorchSaveWriterTests {
    static func sortedTensors(_ file: String) throws -> [(key: String, tensor: HostTensor)] {
        let checkpoint = try Checkpoint(path: Fixtures.path("torchsave/\(file)"))
        return try checkpoint.names.sorted().map { ($0, try checkpoint.tensor($0)) }
    }

    static func records(_ bytes: [UInt8], file: String) throws -> [String: [UInt8]] {
        try bytes.withUnsafeBytes { buffer in
            let archive = try StoredZipArchive(file: file, bytes: buffer)
            return Dictionary(uniqueKeysWithValues: archive.names.map { ($0, [UInt8](archive.data(archive.entries[$0]!))) })
        }
    }

    @Test(arguments: ["many", "one"])
    func pickleIsByteIdenticalToTorchSave(name: String) throws {
        let tensors = try Self.sortedTensors("\(name).safetensors")
        let expected = try [UInt8](Data(contentsOf: Fixtures.data.appendingPathComponent("torchsave/\(name).data.pkl")))
        let archive = try TorchCheckpointWriter.archive(tensors, name: "archive")
        let pickle = try Self.records(archive, file: name)["archive/data.pkl"]
        #expect(pickle == expected, "\(name): pickle differs from torch.save's (\(pickle?.count ?? 0) vs \(expected.count) bytes)")
    }

    @Test func archiveReadsBackThroughTheRestrictedReader() throws {
        let tensors = try Self.sortedTensors("many.safetensors")
        let archive = try TorchCheckpointWriter.archive(tensors, name: "archive")
        let read = try archive.withUnsafeBytes { try TorchCheckpointReader.read(bytes: $0, file: "many") }
        #expect(read.count == tensors.count)
        for (ours, theirs) in zip(read, tensors) {
            #expect(ours.name == theirs.key && ours.tensor.dtype == theirs.tensor.dtype && ours.tensor.shape == theirs.tensor.shape
                    && ours.tensor.bytes == theirs.tensor.bytes, "\(theirs.key)")
        }
    }

    /// Every record of AdapterHub's own file but the random `.data/serialization_id`.
    @Test(arguments: ["bert_houlsby", "bert_pfeiffer", "llama_pfeiffer"])
    func adapterHubExportHoldsTheFileAdapterHubWrites(caseName: String) throws {
        let folder = Fixtures.temporaryDirectory()
        let original = Fixtures.path("cases/\(caseName)/adapter_bin")
        // llama_pfeiffer's folder holds the lm_head adapters saved with it; the adapter file is what is compared.
        #expect(try CLI.run(["import", original, "-o", folder + "/a.peftpack", "--without-head"]).status == 0)
        let export = try CLI.run(["export", folder + "/a.peftpack", "-o", folder + "/out", "--format", "adapterhub"])
        #expect(export.status == 0, "\(export.stderr)")
        let ours = try Self.records([UInt8](Data(contentsOf: URL(fileURLWithPath: folder + "/out/pytorch_adapter.bin"))), file: "ours")
        var theirs = try Self.records([UInt8](Data(contentsOf: URL(fileURLWithPath: original + "/pytorch_adapter.bin"))), file: "theirs")
        #expect(theirs.removeValue(forKey: "pytorch_adapter/.data/serialization_id") != nil)
        #expect(ours == theirs)
        #expect(FileManager.default.fileExists(atPath: folder + "/out/adapter.safetensors"))
    }
}
