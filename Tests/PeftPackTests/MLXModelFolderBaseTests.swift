import Foundation
import Testing
@testable import PeftPack

/// Unquantized MLX model folders of other families (fixturegen/mlx_quantized.py's qwen2_bf16 and
/// mistral_bf16: mlx_qwen2/model and families/mistral/model loaded and saved by mlx-lm in bf16, as
/// `mlx_lm.convert` without -q writes them) are bases for those families' PEFT adapters: import
/// checks shapes against them, merge writes them, and verify --merged passes the merge (bf16
/// rounding bounds, Verify's own) and fails the adapter merged at weight 1.05.
@Suite struct MLXModelFolderBaseTests {
    static let cases = [("qwen2_bf16", "mlx_qwen2/cases/mlx_qwen2_lora"), ("qwen2_bf16", "mlx_qwen2/cases/mlx_qwen2_dora"),
                        ("mistral_bf16", "families/mistral/cases/mistral_lora"), ("mistral_bf16", "families/mistral/cases/mistral_dora"),
                        ("mistral_bf16", "families/mistral/cases/mistral_ia3")]

    @Test(arguments: cases)
    func aPEFTAdapterImportsMergesAndVerifiesOnIt(variant: String, adapterCase: String) throws {
        let folder = Fixtures.path("mlx_quantized/\(variant)/model")
        let base = try BaseModel(folder: folder)
        #expect(base.checkpoint.decoded == nil && base.checkpoint.info("model.layers.0.self_attn.q_proj.weight")?.dtype == .bf16)
        let pack = Fixtures.temporaryDirectory() + "/adapter.peftpack"
        _ = try PackImport.run(sources: [.init(path: Fixtures.path(adapterCase + "/adapter"), name: nil)], output: pack, baseFolder: folder, level: 3)
        for (weight, passes) in [(1.0, true), (1.05, false)] {
            let output = Fixtures.temporaryDirectory() + "/merged"
            let report = try Merge.run(base: folder, inputs: [MergeInput(pack: pack, adapter: nil, weight: weight)], output: output, options: Merge.Options())
            #expect(report.tensorsTouched > 0)
            #expect(try Checkpoint(path: output).info("model.layers.0.self_attn.q_proj.weight")?.dtype == .bf16)
            let verify = try Verify.run(pack: pack, base: folder, adapterNames: [], targets: [.merged(folder: output)], inputShape: (2, 16), seed: 0)
            #expect(verify.comparisons[0].passed == passes, "\(adapterCase) at weight \(weight)")
        }
    }
}
