import ArgumentParser
import Foundation
import PeftPack

struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Fold adapters into a base model's weights, streaming, rounding once.",
        discussion: """
            Each changed tensor is computed in fp64 from the base and every adapter, in the order \
            given and scaled by its --weight (W' = W + Σ wᵢ·sᵢ·BᵢAᵢ for LoRA; DoRA, IA3, full tensors \
            and trained biases as PEFT defines them), then rounded once to the output dtype with \
            round-to-nearest-even. Untouched tensors are copied byte for byte. The output folder has \
            the base's tensor names, shard layout and other files, and appears atomically.

            On a base whose head is tied to its embedding (tie_word_embeddings: GPT-2, Gemma, small \
            Qwen2 and Llama 3.2 models), an adapter that changes only one of them (LoRA or \
            modules_to_save on embed_tokens or lm_head) leaves the other on the original weight. \
            --tied-embeddings untie (the default) then writes lm_head.weight and sets \
            tie_word_embeddings false, so the merged model computes what the adapter computed; \
            keep writes one shared tensor, as PEFT's merge does for LoRA, warns, and reports how far \
            head and embedding are from the adapter's (check the logits with verify --merged).

            The base must be the one the pack was made for: where the pack recorded them (import or \
            extract with --base), the dtype, shape and content hash (XXH3-64) of every base tensor the \
            chosen adapters target are compared, content as merge reads each tensor. A tensor with other \
            content or another shape is refused, naming it; one stored in another dtype is a warning \
            (its content cannot be compared then). --trust-base compares names, dtypes and shapes only; \
            --skip-base-check turns every difference into a warning (content is still compared, so a \
            wrong base of the same shapes is named). --force no longer skips this check: it only \
            replaces an existing output.

            A bitsandbytes base (NF4/FP4, double quantization, LLM.int8) is read as its dequantized \
            weights; by default the output is that plain model plus ΔW, rounded once, without \
            quantization_config. --dtype same keeps it quantized as PEFT's merge_and_unload does: \
            each merged weight is quantized again with its own settings, bit-exact with bitsandbytes' \
            CPU quantizers, from W + ΔW rounded once to fp32; every other tensor is copied byte for \
            byte and config.json keeps its quantization_config. On an unquantized base, same is auto.

            A GGUF base (a .gguf file, or the first shard of a split model) gives one GGUF file: its \
            key/value entries and untouched tensors copied byte for byte (a split model's split.* \
            keys dropped), each merged tensor computed in fp64 from the dequantized base and put back \
            in the converter's row order. By default a quantized merged tensor is written as F16 (as \
            llama-export-lora does) and a float one in its own type, rounded once; --dtype \
            bf16|fp16|fp32 writes every merged tensor in that type; --dtype same requantizes each to \
            the type the base stores it in, and --dtype q8_0|q4_0|q4_1|q5_0|q5_1|q4_k|q5_k|q6_k to \
            that type, from W + ΔW rounded once to fp32 (gguf-py's quantizers for the 32-element \
            types, ggml's reference quantizers for the K-quants).

            An MLX-quantized model folder (config.json with the quantization entry mlx_lm.convert -q \
            writes: affine, 2/3/4/6/8 bits, group size 32/64/128, or mode mxfp4, mxfp8 or nvfp4) is \
            read as mx.dequantize gives its weights; by default the output is that plain model plus \
            ΔW, rounded once to the scales' dtype (bf16 for the float modes), without quantization. \
            --dtype same keeps it an MLX-quantized folder: each merged weight quantized as \
            mx.quantize does with its layer's mode, group size and bits, from W + ΔW rounded once to \
            fp32, every other tensor and config.json byte for byte (a promoted module is marked \
            false in its quantization entry).

            Requantizing (--dtype same or a quantized type) reports, per merged weight, what \
            survived: ‖Q(W+ΔW)−Q(W)‖/‖ΔW‖, the cosine of Q(W+ΔW)−Q(W) with ΔW, the share of values \
            left unchanged, and survival, the share of ΔW carried along ΔW (norm ratio × cosine). \
            Weights whose survival is below --min-survival (default 0.5) are named in a warning; \
            --promote writes them in a wider type instead (--promote-all: every merged weight): \
            q8_0, bf16, fp16 or fp32 on a GGUF base; bf16, fp16 or fp32 on a bitsandbytes base, as \
            plain weights rounded once that config.json's quantization_config lists in \
            llm_int8_skip_modules, so transformers loads them as plain Linear layers; bf16, fp16 or \
            fp32 on an MLX base, as dense weights without scales, which mlx-lm loads as plain Linear layers.

            A negative weight un-merges: merging the same LoRA with --weight -1 into the merged model \
            (--trust-base, as its content is no longer the base's) restores the base to within one \
            rounding step.

            On DoRA, --weight w gives W + w·(W_dora − W): PEFT scaling the adapter by w keeps the \
            magnitude instead, so the two differ between 0 and 1.

            Weights must be finite numbers, and not all 0 (that would write a copy of the base). A merged tensor that would hold NaN or ±Inf where the base \
            element is finite (an adapter value is NaN/Inf, or W + ΔW overflows the output dtype, such \
            as fp16 past 65504) is refused, naming the tensor, and nothing is written.

            Examples:
              peftpack merge --base llama/ lora.peftpack -o llama-merged/
              peftpack merge --base llama/ a.peftpack b.peftpack:task --weight 0.7 --weight 0.3 -o mix/ --dtype fp32
              peftpack merge --base llama-merged/ lora.peftpack --weight -1 --trust-base -o llama-restored/
              peftpack merge --base model-Q4_K_M.gguf lora.peftpack -o merged-Q4_K_M.gguf --dtype same --promote q8_0
            """)

    @Option(help: "Base model folder (config.json + safetensors, single or sharded; bitsandbytes-quantized), or a GGUF model file.")
    var base: String

    @Argument(help: "Packs to merge, each PACK or PACK:ADAPTER (default: every adapter of the pack).")
    var packs: [String]

    @Option(name: .shortAndLong, help: "Output model folder, or GGUF file for a GGUF base (must not exist unless --force).")
    var output: String

    @Option(name: .customLong("weight"), parsing: .unconditionalSingleValue, help: "Weight per PACK, in order (default 1 each; a finite number).")
    var weights: [Double] = []

    @Option(help: "Output dtype (auto: the base's, F16 for a GGUF base's quantized tensors; same: a quantized base stays quantized; a ggml type for a GGUF base). (values: bf16, fp16, fp32, auto, same, nf4, fp4, int8, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k; default: auto)",
            transform: MergeOutputDType.parse)
    var dtype: MergeOutputDType = .auto

    @Option(name: .customLong("min-survival"), help: "Requantized weights keeping less of their change than this share are named (and promoted with --promote); default 0.5.")
    var minSurvival: Double = 0.5

    @Option(help: "Write the weights below --min-survival in this wider type: q8_0 (GGUF bases), bf16, fp16 or fp32.")
    var promote: Promotion.Precision?

    @Flag(name: .customLong("promote-all"), help: "With --promote: promote every merged weight, not only those below --min-survival.")
    var promoteAll = false

    @Option(name: .customLong("max-shard-size"), help: "Reshard the output (e.g. 500MB, 2GB); default: the base's shards.", transform: OptionValue.byteSize)
    var maxShardSize: Int?

    @Flag(help: "Replace an existing output folder (it no longer skips the base check: see --skip-base-check).")
    var force = false

    @Flag(name: .customLong("skip-unmergeable"), help: "Leave out bottleneck, prefix and prompt adapters instead of refusing (refused if nothing is left to merge).")
    var skipUnmergeable = false

    @Option(name: .customLong("tied-embeddings"), help: "On a tied base: untie (write lm_head, keep the adapter's function) or keep (one shared tensor, at a reported cost).")
    var tiedEmbeddings: TiedEmbeddingsPolicy = .untie
    @OptionGroup var baseCheck: BaseCheckOptions

    @OptionGroup var outputOptions: OutputOptions

    func validate() throws {
        guard !packs.isEmpty else { throw ValidationError("give at least one PACK") }
        try validateWeights(weights, packs: packs.count)
        if let maxShardSize, maxShardSize <= 0 { throw ValidationError("--max-shard-size must be a size such as 500MB or 2GB") }
        guard minSurvival.isFinite, minSurvival >= 0 else { throw ValidationError("--min-survival must be a share, 0 or more (0.5 = half of each change)") }
        if promoteAll && promote == nil { throw ValidationError("--promote-all needs --promote TYPE") }
        if promote != nil && !dtype.requantizes { throw ValidationError("--promote applies when merged weights are requantized: give --dtype same or a quantized type") }
    }

    func run() throws {
        try reportingErrors {
            let inputs = MergeInput.parse(packs, weights: weights)
            let options = Merge.Options(dtype: dtype.dtype, maxShardSize: maxShardSize,
                                        force: force, skipUnmergeable: skipUnmergeable, tiedEmbeddings: tiedEmbeddings,
                                        baseCheck: baseCheck.level, keepsQuantization: dtype.keepsQuantization,
                                        quantizedType: dtype.quantizedType, minSurvival: minSurvival,
                                        promotion: promote.map { Promotion(precision: $0, allMerged: promoteAll) })
            let progress = ProgressLine(label: "merge", enabled: !outputOptions.quiet)
            let report = try baseCheck.hinting {
                try Merge.run(base: base, inputs: inputs, output: output, options: options) { progress.update(done: $0, total: $1) }
            }
            progress.finish()
            baseCheck.printWarnings(report.baseCheck)
            for adapter in report.adapters where adapter.lostShare > 0.25 {
                printWarning("\(Int(adapter.lostShare * 100))% of the elements adapter \(adapter.adapter) changed rounded back to the base value in the output dtype; merge with --dtype fp32 to keep them")
            }
            if let tie = report.tiedEmbeddings, tie.outcome == "kept" {
                func number(_ value: Double?) -> String { String(format: "%.3g", value ?? 0) }
                printWarning("the tie of \(tie.head) and \(tie.embedding) is kept, so each carries the other's changes: the head is \(number(tie.headMaxAbsError)) max-abs (\(number(tie.headRelativeError)) relative) and the embedding \(number(tie.embeddingMaxAbsError)) max-abs (\(number(tie.embeddingRelativeError)) relative) from what the adapters compute; merge with --tied-embeddings untie to keep their function")
            }
            if let below = report.belowMinSurvival, !below.isEmpty {
                let promoted = report.requantized?.contains { $0.promotedTo != nil } ?? false
                let listed = below.prefix(4).joined(separator: ", ") + (below.count > 4 ? " and \(below.count - 4) more" : "")
                printWarning("\(below.count) requantized weights keep less than \(minSurvival) of their change (\(listed))" +
                             (promoted ? "; they were written at the promoted type" : ": the merged model computes less of the adapter there; merge with --promote (q8_0 on a GGUF base, bf16 on either) or a float --dtype to keep it"))
            }
            if outputOptions.json {
                try printJSON(report)
            } else {
                print("wrote \(report.output): \(report.tensorsTouched) tensors merged, \(report.tensorsCopied) copied, \(formatBytes(report.bytesWritten)) in \(String(format: "%.2f", report.seconds)) s; max |ΔW| \(String(format: "%.3g", report.maxAbsDelta))")
                for adapter in report.adapters {
                    print("  \(adapter.adapter) (weight \(adapter.weight)): \(adapter.changedElements) elements changed, \(String(format: "%.2f", adapter.lostShare * 100))% lost to rounding")
                }
                if let tie = report.tiedEmbeddings {
                    switch tie.outcome {
                    case "untied": print("  \(tie.head) written on its own and tie_word_embeddings set false: the adapters change it and \(tie.embedding) differently")
                    case "kept": print("  \(tie.head) stays tied to \(tie.embedding) (--tied-embeddings keep)")
                    default: print("  \(tie.head) stays tied to \(tie.embedding): the adapters change both alike")
                    }
                    if tie.storedHeadCopy { print("  \(tie.head): the base stores a copy of the tied head, written with its merged value (transformers loads the copy)") }
                }
                if let survival = report.requantized, !survival.isEmpty {
                    func figure(_ value: Double) -> String { String(format: "%.3f", value) }
                    let worst = survival.min { $0.survival < $1.survival }!
                    let unchanged = survival.map(\.unchangedCodeShare).reduce(0, +) / Double(survival.count)
                    print("  requantized \(survival.count) weights: survival \(figure(worst.survival))–\(figure(survival.map(\.survival).max()!)) (lowest \(worst.tensor)), ‖Q(W+ΔW)−Q(W)‖/‖ΔW‖ \(figure(survival.map(\.normRatio).min()!))–\(figure(survival.map(\.normRatio).max()!)), cosine with ΔW \(figure(survival.map(\.cosine).min()!))–\(figure(survival.map(\.cosine).max()!)), \(String(format: "%.1f", unchanged * 100))% of values unchanged on average")
                    let promoted = survival.filter { $0.promotedTo != nil }
                    if !promoted.isEmpty { print("  promoted \(promoted.count) weights to \(promoted[0].promotedTo!)") }
                }
                if !report.skippedAdapters.isEmpty { print("  skipped (not mergeable): \(report.skippedAdapters.joined(separator: ", "))") }
            }
        }
    }
}
