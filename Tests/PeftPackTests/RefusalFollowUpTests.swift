import Foundation
import Testing
@testable import PeftPack

/// Issue 16's follow-ups from a new-user trial: --skip-base-check on a same-shaped wrong base
/// warns, stack's recompression refuses a non-finite factor by name, a merge whose every weight is
/// 0 is refused, and verify's help states its default once.
@Suite struct RefusalFollowUpTests {
    static let base = Fixtures.path("models/llama-tiny")
    /// llama-tiny with only layers.1 v_proj fine-tuned (fixturegen/base_binding.py): same shapes, other content.
    static let wrongBase = Fixtures.path("base_binding/llama-tiny-partial-ft")

    static func boundPack() throws -> String {
        let pack = Fixtures.temporaryDirectory() + "/lora.peftpack"
        _ = try PackImport.run(sources: [.init(path: Fixtures.path("cases/llama_lora/adapter"), name: nil)], output: pack, baseFolder: base, level: 3)
        return pack
    }

    /// The most common mistake: a wrong base of the same shapes. The content is compared and
    /// each pack's differing tensors become one warning, naming the tensor; the merge still runs.
    @Test func skipBaseCheckComparesContentAndWarns() throws {
        let pack = try Self.boundPack()
        let merge = try CLI.run(["merge", "--base", Self.wrongBase, pack, "-o", Fixtures.temporaryDirectory() + "/m", "--skip-base-check"])
        #expect(merge.status == 0, "\(merge.stderr)")
        #expect(merge.stderr.contains("peftpack: warning: \(pack): was made for a base whose model.layers.1.self_attn.v_proj.weight holds other values"), "\(merge.stderr)")
        let verify = try CLI.run(["verify", pack, "--base", Self.wrongBase, "--against", pack, "--skip-base-check"])
        #expect(verify.stderr.contains("model.layers.1.self_attn.v_proj.weight holds other values"), "\(verify.stderr)")
        // Control: the right base gives no warning.
        let right = try CLI.run(["merge", "--base", Self.base, pack, "-o", Fixtures.temporaryDirectory() + "/m", "--skip-base-check"])
        #expect(right.status == 0 && right.stderr.isEmpty, "\(right.stderr)")
    }

    /// A pack kept with --allow-nonfinite (numbers/inf_lora: torch put ±Inf in layers.1
    /// down_proj lora_B) reaches LAPACK only through stack's recompression, which rejected it with
    /// "sgeqrf failed (info = -4)", exit 3.
    @Test func stackRecompressionRefusesANonFiniteFactorByName() throws {
        let pack = Fixtures.temporaryDirectory() + "/inf.peftpack"
        _ = try PackImport.run(sources: [.init(path: Fixtures.path("numbers/inf_lora"), name: nil)], output: pack, baseFolder: nil, level: 3, allowNonFinite: true)
        for recompression in [["--rank", "2"], ["--energy", "0.9"]] {
            let output = Fixtures.temporaryDirectory() + "/stacked.peftpack"
            let result = try CLI.run(["stack", pack, "-o", output] + recompression)
            #expect(result.status == 2, "\(result.stderr)")
            #expect(result.stderr.contains("tensor default/model.layers.1.mlp.down_proj/B holds 2 ±Inf of its 512 elements, which cannot be recompressed"), "\(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: output))
        }
    }

    @Test func mergeWithEveryWeightZeroIsRefused() throws {
        let pack = try Self.boundPack()
        let output = Fixtures.temporaryDirectory() + "/m"
        let result = try CLI.run(["merge", "--base", Self.base, pack, pack, "--weight", "0", "--weight", "-0", "-o", output])
        #expect(result.status == 2)
        #expect(result.stderr == "peftpack: error: \(pack), \(pack): nothing to merge: every adapter's weight is 0, so the output would be a copy of the base; give at least one adapter a non-zero --weight\n", "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: output))
        // One non-zero weight is a merge.
        let some = try CLI.run(["merge", "--base", Self.base, pack, pack, "--weight", "0", "--weight", "0.5", "-o", output])
        #expect(some.status == 0, "\(some.stderr)")
    }

    /// The trial's build printed "(default 2,16). (default: 2,16)": the help text and the
    /// parser's own default both. Exactly one statement of it must remain.
    @Test func verifyHelpStatesTheInputShapeDefaultOnce() throws {
        let help = try CLI.run(["verify", "--help"]).stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(help.components(separatedBy: "2,16)").count == 2, "\(help)")
    }
}
