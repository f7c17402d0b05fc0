import Foundation
import Testing
@testable import PeftPack

/// Packs with several adapters, and the base bound by content. The references are
/// fixtures/data/base_binding (fixturegen/base_binding.py, PEFT 0.21.2): one PEFT save folder with
/// adapters default (q,v), second (k,o) and third (q); the logits of each; PEFT's
/// add_weighted_adapter("cat") merge of all three; llama-tiny with only layers.1 v_proj fine-tuned.
@Suite(.serialized) struct BaseBindingTests {
    static let saveFolder = Fixtures.path("base_binding/multi/adapter")
    static let reference = Fixtures.path("base_binding/multi/multi.ref.safetensors")
    static let base = Fixtures.path("models/llama-tiny")
    static let partialFineTune = Fixtures.path("base_binding/llama-tiny-partial-ft")
    static let fineTunedTensor = "model.layers.1.self_attn.v_proj.weight"
    /// The weights fixturegen/base_binding.py gave add_weighted_adapter.
    static let mixWeights = ["default": 0.3, "second": 0.7, "third": 1.5]

    static func multiPack() throws -> String {
        let output = Fixtures.temporaryDirectory() + "/multi.peftpack"
        _ = try PackImport.run(sources: [.init(path: saveFolder, name: nil)], output: output, baseFolder: base, level: 3)
        return output
    }

    static func merge(_ inputs: [MergeInput], base: String = base, level: BaseCheckLevel = .content) throws -> (Merge.Report, Checkpoint) {
        let output = Fixtures.temporaryDirectory() + "/merged"
        let report = try Merge.run(base: base, inputs: inputs, output: output, options: .init(baseCheck: level))
        return (report, try Checkpoint(path: output))
    }

    /// PEFT merges in fp32 (B·A rounded, then the sum), ours rounds once from fp64: a few fp32
    /// ulps of the tensor's largest weight, as in MergeTests.mergedWeightsMatchPeftMergeAndUnload.
    static func expectMatchesPeft(_ merged: Checkpoint, tensors names: [String]) throws {
        let peft = try SafetensorsFile(path: Fixtures.path("base_binding/multi/mix_merged.safetensors"))
        for name in names {
            let expected = try peft.tensor(name).floats(), ours = try merged.tensor(name).floats()
            let scale = expected.map { abs($0) }.max() ?? 0
            let worst = zip(ours, expected).map { abs($0 - $1) }.max() ?? .infinity
            #expect(worst <= 8 * scale.ulp, "\(name) differs from PEFT's merge by \(worst)")
        }
    }

    // MARK: a PEFT folder with several adapters

    /// save_pretrained after add_adapter: default at the root, second/ and third/ beside it. Each
    /// imported adapter, applied alone, reproduces PEFT's logits with that adapter active
    /// (fp32 summation order only: relative 1e-5, PipelineVerifyTests.tolerance).
    @Test func everyAdapterOfAPeftSaveFolderIsImportedAndMatchesPeft() throws {
        let pack = try Self.multiPack()
        #expect(try PackReader(path: pack).adapterDocument().adapters.map(\.name) == ["default", "second", "third"])
        for name in ["default", "second", "third"] {
            let report = try Verify.run(pack: pack, base: Self.base, adapterNames: [name],
                                        targets: [.reference(path: Self.reference, key: "output_\(name)")],
                                        inputShape: (2, 7), seed: 0, tolerance: PipelineVerifyTests.tolerance)
            #expect(report.passed, "\(name): max rel \(report.comparisons[0].maxRelError)")
        }
    }

    /// Negative control: the adapters differ, so one adapter's logits do not pass for another's.
    @Test func oneAdaptersLogitsDoNotPassForAnother() throws {
        let report = try Verify.run(pack: try Self.multiPack(), base: Self.base, adapterNames: ["second"],
                                    targets: [.reference(path: Self.reference, key: "output_third")],
                                    inputShape: (2, 7), seed: 0, tolerance: PipelineVerifyTests.tolerance)
        #expect(!report.passed)
    }

    @Test func nameRenamesTheRootAdapterOnly() throws {
        let output = Fixtures.temporaryDirectory() + "/renamed.peftpack"
        let report = try PackImport.run(sources: [.init(path: Self.saveFolder, name: "task")], output: output, baseFolder: nil, level: 3)
        #expect(report.adapters == ["task", "second", "third"])
    }

    /// A Trainer's checkpoint-N beside the adapters is not one of them: left out, and said so.
    @Test func trainerCheckpointsAreLeftOutAndListed() throws {
        let folder = Fixtures.temporaryDirectory() + "/save"
        try FileManager.default.copyItem(atPath: Self.saveFolder, toPath: folder)
        try FileManager.default.copyItem(atPath: folder + "/second", toPath: folder + "/checkpoint-8")
        try Data("{}".utf8).write(to: URL(fileURLWithPath: folder + "/checkpoint-8/trainer_state.json"))
        let result = try CLI.run(["import", folder, "-o", folder + "/out.peftpack", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("left out \(folder)/checkpoint-8: a Trainer checkpoint"), "\(result.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        #expect(json["adapters"] as? [String] == ["default", "second", "third"])
    }

    /// A model whose first adapter was not named "default" saves every adapter in a sub-folder.
    @Test func folderWithAdaptersOnlyInSubfoldersImportsThem() throws {
        let folder = Fixtures.temporaryDirectory() + "/save"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
        for name in ["second", "third"] { try FileManager.default.copyItem(atPath: Self.saveFolder + "/" + name, toPath: folder + "/" + name) }
        let report = try PackImport.run(sources: [.init(path: folder, name: nil)], output: folder + "/out.peftpack", baseFolder: nil, level: 3)
        #expect(report.adapters == ["second", "third"])
        let renamed = try CLI.run(["import", folder, "-o", folder + "/named.peftpack", "--name", "x"])
        #expect(renamed.status == 2)
        #expect(renamed.stderr.contains("no adapter at its root"), "\(renamed.stderr)")
    }

    // MARK: one adapter of a pack

    /// Each adapter of one pack with its own weight equals PEFT's add_weighted_adapter("cat")
    /// merge with those weights, on every tensor it changes; the rest is the base, byte for byte.
    @Test func eachAdapterOfOnePackMergesWithItsOwnWeightAsPeft() throws {
        let pack = try Self.multiPack()
        let inputs = ["default", "second", "third"].map { MergeInput(pack: pack, adapter: $0, weight: Self.mixWeights[$0]!) }
        let (report, merged) = try Self.merge(inputs)
        let peft = try SafetensorsFile(path: Fixtures.path("base_binding/multi/mix_merged.safetensors"))
        try Self.expectMatchesPeft(merged, tensors: peft.names)
        let base = try Checkpoint(path: Self.base)
        for name in base.names where !peft.names.contains(name) {
            #expect(try merged.tensor(name).bytes == base.tensor(name).bytes, "\(name)")
        }
        #expect(report.baseCheck.contentCompared == 8)
    }

    /// The adapter the old fingerprint check refused: `second` targets 4 of the pack's 8 tensors.
    @Test func oneAdapterOfAPackMergesAlone() throws {
        let pack = try Self.multiPack()
        let (report, merged) = try Self.merge([MergeInput(pack: pack, adapter: "second", weight: 0.7)])
        let changed = ["k_proj", "o_proj"].flatMap { module in (0..<2).map { "model.layers.\($0).self_attn.\(module).weight" } }
        try Self.expectMatchesPeft(merged, tensors: changed)
        #expect(report.tensorsTouched == 4)
        #expect(report.baseCheck.tensorsCompared == 4 && report.baseCheck.contentCompared == 4)
    }

    /// Stacking adapters of one pack keeps the base's records, and the stacked adapter merges as
    /// PEFT's weighted adapter.
    @Test func stackOfOnePacksAdaptersMergesAsPeft() throws {
        let pack = try Self.multiPack()
        let stacked = Fixtures.temporaryDirectory() + "/stacked.peftpack"
        _ = try Stack.run(inputs: ["default", "second", "third"].map { MergeInput(pack: pack, adapter: $0, weight: Self.mixWeights[$0]!) },
                          output: stacked, options: .init())
        let (report, merged) = try Self.merge([MergeInput(pack: stacked, adapter: nil, weight: 1)])
        try Self.expectMatchesPeft(merged, tensors: try SafetensorsFile(path: Fixtures.path("base_binding/multi/mix_merged.safetensors")).names)
        #expect(report.baseCheck.contentCompared == 8)
    }

    // MARK: the base bound by content

    /// The fixture differs from llama-tiny in exactly one tensor, which the pack's `default`
    /// adapter targets: the reference itself moves there and nowhere else.
    @Test func partialFineTuneDiffersInOneTargetedTensor() throws {
        let base = try Checkpoint(path: Self.base), other = try Checkpoint(path: Self.partialFineTune)
        #expect(base.names == other.names)
        let differing = try base.names.filter { try base.tensor($0).bytes != other.tensor($0).bytes }
        #expect(differing == [Self.fineTunedTensor])
    }

    @Test func anotherCheckpointIsRefusedNamingTheDifferingTensor() throws {
        let pack = try Self.multiPack()
        let output = Fixtures.temporaryDirectory() + "/out"
        let result = try CLI.run(["merge", "--base", Self.partialFineTune, pack, "-o", output, "--force"])
        #expect(result.status == 2)
        #expect(result.stderr.split(separator: "\n").count == 1)
        #expect(result.stderr.contains("\(Self.fineTunedTensor) holds other values"), "\(result.stderr)")
        #expect(result.stderr.contains("--trust-base") && result.stderr.contains("--skip-base-check"))
        #expect(!FileManager.default.fileExists(atPath: output))
        #expect(try FileManager.default.contentsOfDirectory(atPath: (output as NSString).deletingLastPathComponent).isEmpty)
        #expect(throws: BaseMismatchError.self) { try Self.merge([MergeInput(pack: pack, adapter: "default", weight: 1)], base: Self.partialFineTune) }
    }

    /// Only the tensors the chosen adapters target are compared: `second` and `third` leave the
    /// fine-tuned v_proj alone, so their merge into the other checkpoint is what was asked.
    @Test func adaptersNotTargetingTheDifferingTensorMerge() throws {
        let pack = try Self.multiPack()
        let (report, _) = try Self.merge([MergeInput(pack: pack, adapter: "second", weight: 1), MergeInput(pack: pack, adapter: "third", weight: 1)],
                                         base: Self.partialFineTune)
        #expect(report.baseCheck.contentCompared == 6)
    }

    @Test func trustBaseComparesNamesDtypesAndShapesOnly() throws {
        let (report, _) = try Self.merge([MergeInput(pack: try Self.multiPack(), adapter: nil, weight: 1)], base: Self.partialFineTune, level: .shapes)
        #expect(report.baseCheck.contentCompared == 0)
        #expect(report.baseCheck.tensorsCompared == 8)
        #expect(report.baseCheck.warnings.isEmpty)
    }

    @Test func verifyRefusesAnotherCheckpointUnlessTrusted() throws {
        let pack = try Self.multiPack()
        let arguments = ["verify", pack, "--base", Self.partialFineTune, "--reference", Self.reference, "--name", "default", "--key", "output_default"]
        let refused = try CLI.run(arguments)
        #expect(refused.status == 2)
        #expect(refused.stderr.contains(Self.fineTunedTensor), "\(refused.stderr)")
        // Trusted, it runs, and the numbers then show the base is not the adapter's.
        #expect(try CLI.run(arguments + ["--trust-base"]).status == 1)
    }

    /// llama-tiny-bf16 is llama-tiny converted: same names and shapes, another dtype.
    @Test func dtypeOnlyDifferenceIsOneWarning() throws {
        let (report, _) = try Self.merge([MergeInput(pack: try Self.multiPack(), adapter: nil, weight: 1)], base: Fixtures.path("models/llama-tiny-bf16"))
        #expect(report.baseCheck.contentCompared == 0)
        #expect(report.baseCheck.warnings.count == 1)
        #expect(report.baseCheck.warnings.first?.contains("8 tensors it targets (first model.layers.0.self_attn.k_proj.weight) in another dtype (F32 → BF16)") == true,
                "\(report.baseCheck.warnings)")
    }

    // MARK: packs written before per-tensor records

    /// The document of format 1.0: one fingerprint over every adapter's targets, content hashes,
    /// no `tensors`.
    static func legacyMultiPack() throws -> String {
        let reader = try PackReader(path: try multiPack())
        var document = try reader.adapterDocument()
        #expect(document.base?.tensors?.count == 8)
        document.base?.tensors = nil
        let output = Fixtures.temporaryDirectory() + "/legacy.peftpack"
        try PackWriter.write(try reader.tensors.map { ($0.name, try reader.readTensor($0.name)) }, document: document, to: output)
        return output
    }

    @Test func legacyPackChecksOneAdapterByContent() throws {
        let pack = try Self.legacyMultiPack()
        let (report, merged) = try Self.merge([MergeInput(pack: pack, adapter: "second", weight: 0.7)])
        #expect(report.baseCheck.contentCompared == 4)
        try Self.expectMatchesPeft(merged, tensors: ["model.layers.0.self_attn.k_proj.weight", "model.layers.1.self_attn.o_proj.weight"])
        #expect(throws: BaseMismatchError.self) { try Self.merge([MergeInput(pack: pack, adapter: "default", weight: 1)], base: Self.partialFineTune) }
    }

    @Test func legacyPackTellsADtypeOnlyDifference() throws {
        let (report, _) = try Self.merge([MergeInput(pack: try Self.legacyMultiPack(), adapter: "third", weight: 1)],
                                         base: Fixtures.path("models/llama-tiny-bf16"))
        #expect(report.baseCheck.warnings.count == 1)
        #expect(report.baseCheck.warnings.first?.contains("in another dtype (F32 → BF16)") == true, "\(report.baseCheck.warnings)")
    }

    /// A record that is not what §9.2 says is a damaged document: refused when the pack is read.
    @Test func malformedBaseRecordIsRefused() throws {
        let reader = try PackReader(path: try Self.multiPack())
        guard case .object(var members) = reader.document, let index = members.firstIndex(where: { $0.key == "base" }),
              case .object(var base) = members[index].value else { Issue.record("no base object"); return }
        base.removeAll { $0.key == "tensors" }
        base.append(("tensors", .object([(Self.fineTunedTensor, .object([("dtype", .string("F32")), ("shape", .string("[32, 64]"))]))])))
        members[index].value = .object(base)
        let output = Fixtures.temporaryDirectory() + "/bad.peftpack"
        let writer = try PackWriter(destination: output, options: .init())
        for entry in reader.tensors { try writer.append(try reader.readTensor(entry.name), name: entry.name) }
        try writer.finish(document: .object(members))
        let result = try CLI.run(["merge", "--base", Self.base, output, "-o", Fixtures.temporaryDirectory() + "/out"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("adapter document does not match the format"), "\(result.stderr)")
    }

    /// A pack whose record says its base stored a targeted tensor in another shape (IA3 vectors
    /// fix only one side of the weight, so the adapter's own shapes cannot tell): refused naming
    /// the tensor and both shapes; --skip-base-check merges with that as a warning.
    @Test func recordedShapeDifferenceIsRefusedUnlessSkipped() throws {
        let source = try PackReader(path: try PipelineVerifyTests.pack("llama_ia3"))
        var document = try source.adapterDocument()
        let tensor = "model.layers.0.mlp.down_proj.weight"
        #expect(document.base?.tensors?[tensor] == BaseTensorRecord(dtype: "F32", shape: [64, 128]))
        document.base?.tensors?[tensor] = BaseTensorRecord(dtype: "F32", shape: [64, 256])
        let pack = Fixtures.temporaryDirectory() + "/wide.peftpack"
        try PackWriter.write(try source.tensors.map { ($0.name, try source.readTensor($0.name)) }, document: document, to: pack)
        let refused = try CLI.run(["merge", "--base", Self.base, pack, "-o", Fixtures.temporaryDirectory() + "/out"])
        #expect(refused.status == 2)
        #expect(refused.stderr.contains("\(tensor) is [64, 256], but \(Self.base) has [64, 128]"), "\(refused.stderr)")
        let (report, _) = try Self.merge([MergeInput(pack: pack, adapter: nil, weight: 1)], level: .skipped)
        #expect(report.baseCheck.warnings.count == 1 && report.baseCheck.warnings[0].contains("[64, 256]"))
    }

    @Test func helpSaysForceNoLongerSkipsTheCheck() throws {
        let help = try CLI.run(["help", "merge"])
        #expect(help.stdout.contains("--skip-base-check") && help.stdout.contains("--trust-base"))
        // The help wraps at the terminal width: compare with line breaks as spaces.
        #expect(help.stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ").contains("--force no longer skips this check"))
        #expect(try CLI.run(["help", "verify"]).stdout.contains("--trust-base"))
        let both = try CLI.run(["merge", "--base", Self.base, "x.peftpack", "-o", "out", "--trust-base", "--skip-base-check"])
        #expect(both.status == 2)
        #expect(both.stderr.contains("not both"))
    }

    // MARK: one base per pack

    @Test func adaptersOfDifferentBasesCannotShareAPack() throws {
        let folder = Fixtures.temporaryDirectory()
        let peft = try CLI.run(["import", Fixtures.path("cases/llama_lora/adapter"), Fixtures.path("cases/gpt2_lora_fan_in_fan_out/adapter"),
                                "--name", "a", "--name", "b", "-o", folder + "/peft.peftpack"])
        #expect(peft.status == 2)
        #expect(peft.stderr.contains("different base") && peft.stderr.contains("give it with --base"), "\(peft.stderr)")
        let bound = folder + "/ft.peftpack"
        _ = try PackImport.run(sources: [.init(path: Fixtures.path("cases/llama_ia3/adapter"), name: "ia3")], output: bound,
                               baseFolder: Fixtures.path("models/llama-tiny-ft"), level: 3)
        let packs = try CLI.run(["import", try Self.multiPack(), bound, "-o", folder + "/both.peftpack"])
        #expect(packs.status == 2)
        #expect(packs.stderr.contains("holds other values"), "\(packs.stderr)")
        #expect(!FileManager.default.fileExists(atPath: folder + "/peft.peftpack") && !FileManager.default.fileExists(atPath: folder + "/both.peftpack"))
    }

    @Test func importWithBaseRefusesAPackBoundToAnother() throws {
        let output = Fixtures.temporaryDirectory() + "/rebound.peftpack"
        let result = try CLI.run(["import", try Self.multiPack(), "-o", output, "--base", Self.partialFineTune])
        #expect(result.status == 2)
        #expect(result.stderr.contains(Self.fineTunedTensor) && result.stderr.contains("without --base"), "\(result.stderr)")
    }

    @Test func packsOfOneBaseShareAPack() throws {
        let folder = Fixtures.temporaryDirectory()
        let ia3 = folder + "/ia3.peftpack"
        _ = try PackImport.run(sources: [.init(path: Fixtures.path("cases/llama_ia3/adapter"), name: "ia3")], output: ia3, baseFolder: Self.base, level: 3)
        let both = folder + "/both.peftpack"
        _ = try PackImport.run(sources: [.init(path: try Self.multiPack(), name: nil), .init(path: ia3, name: nil)], output: both, baseFolder: nil, level: 3)
        let document = try PackReader(path: both).adapterDocument()
        #expect(document.adapters.map(\.name) == ["default", "second", "third", "ia3"])
        #expect(document.base?.tensors?.count == 10)
        #expect(document.base?.contentHashes?.count == 10)
    }
}
