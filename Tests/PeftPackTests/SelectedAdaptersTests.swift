import Foundation
import Testing
@testable import PeftPack

/// Merge, stack and verify choose adapters through one type: the same request is refused the same
/// way, with the same kind, by each.
@Suite struct SelectedAdaptersTests {
    static let base = Fixtures.path("models/llama-tiny")

    /// A pack holding adapters "a" (LoRA) and "b" (another LoRA), imported from PEFT's cases.
    static func twoAdapterPack() throws -> String {
        let pack = Fixtures.temporaryDirectory() + "/two.peftpack"
        let adapter = Fixtures.path("cases/llama_lora/adapter")
        let made = try CLI.run(["import", adapter, Fixtures.path("cases/llama_rslora_patterns/adapter"), "-o", pack, "--name", "a", "--name", "b",
                                "--base", base])
        #expect(made.status == 0, "\(made.stderr)")
        return pack
    }

    static func kind(_ body: () throws -> Void) -> InputError.Kind? {
        do {
            try body()
        } catch let error as InputError {
            return error.kind
        } catch {
            return nil
        }
        return nil
    }

    @Test func aNameThePackLacksIsRefusedAlikeByMergeStackAndVerify() throws {
        let pack = try Self.twoAdapterPack()
        let folder = Fixtures.temporaryDirectory()
        let input = [MergeInput(pack: pack, adapter: "c", weight: 1)]
        #expect(Self.kind { _ = try Merge.run(base: Self.base, inputs: input, output: folder + "/m", options: .init()) } == .noSuchAdapter)
        #expect(Self.kind { _ = try Stack.run(inputs: input, output: folder + "/s.peftpack", options: .init()) } == .noSuchAdapter)
        #expect(Self.kind {
            _ = try Verify.run(pack: pack, base: Self.base, adapterNames: ["c"], targets: [], inputShape: (1, 4), seed: 0)
        } == .noSuchAdapter)
        #expect(!FileManager.default.fileExists(atPath: folder + "/m") && !FileManager.default.fileExists(atPath: folder + "/s.peftpack"))
    }

    /// Before, verify applied an adapter named twice twice over.
    @Test func verifyRefusesAnAdapterChosenTwice() throws {
        let pack = try Self.twoAdapterPack()
        #expect(Self.kind {
            _ = try Verify.run(pack: pack, base: Self.base, adapterNames: ["a", "a"], targets: [], inputShape: (1, 4), seed: 0)
        } == .duplicateName)
        let result = try CLI.run(["verify", pack, "--base", Self.base, "--name", "a", "--name", "a", "--merged", Self.base])
        #expect(result.status == 2)
        #expect(result.stderr == "peftpack: error: \(pack): adapter a is chosen twice; give distinct names with --name\n", "\(result.stderr)")
    }

    /// Every weight 0 changes nothing: merge refused it; stack, which wrote an adapter of zeros, now does too.
    @Test func everyWeightZeroIsRefusedByMergeAndStack() throws {
        let pack = try Self.twoAdapterPack()
        let folder = Fixtures.temporaryDirectory()
        let inputs = [MergeInput(pack: pack, adapter: "a", weight: 0), MergeInput(pack: pack, adapter: "b", weight: -0.0)]
        #expect(Self.kind { _ = try Merge.run(base: Self.base, inputs: inputs, output: folder + "/m", options: .init()) } == .allWeightsZero)
        #expect(Self.kind { _ = try Stack.run(inputs: inputs, output: folder + "/s.peftpack", options: .init()) } == .allWeightsZero)
        let result = try CLI.run(["stack", pack + ":a", pack + ":b", "--weight", "0", "--weight", "0", "-o", folder + "/s.peftpack"])
        #expect(result.status == 2)
        #expect(result.stderr.hasSuffix("nothing to stack: every adapter's weight is 0, so the stacked adapter would change nothing; give at least one adapter a non-zero --weight\n"), "\(result.stderr)")
        let some = try Stack.run(inputs: [inputs[0], MergeInput(pack: pack, adapter: "b", weight: 0.5)], output: folder + "/s.peftpack", options: .init())
        #expect(some.inputs == ["\(pack):a", "\(pack):b"])
    }

    /// One input without a name brings every adapter of its pack, in the pack's order.
    @Test func aPackWithoutANameBringsAllItsAdapters() throws {
        let pack = try Self.twoAdapterPack()
        let selection = try SelectedAdapters([MergeInput(pack: pack, adapter: nil, weight: 0.5), MergeInput(pack: pack, adapter: "a", weight: 2)],
                                             allZeroWeights: nil)
        #expect(selection.entries.map(\.adapter.name) == ["a", "b", "a"])
        #expect(selection.entries.map(\.weight) == [0.5, 0.5, 2])
        #expect(selection.entries.map(\.pack) == [0, 0, 1])
        #expect(Self.kind { _ = try SelectedAdapters.adapter(named: nil, in: selection.packs[0].document, file: pack) } == .severalAdapters)
    }
}
