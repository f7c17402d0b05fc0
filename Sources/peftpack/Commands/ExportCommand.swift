import ArgumentParser
import PeftPack

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write one adapter of a pack as the folder PEFT, AdapterHub or mlx-lm loads, or a GGUF adapter for llama.cpp.",
        discussion: """
            The exported folder holds adapter_config.json (the original text when the adapter came \
            from that tool) and the tensors bit-for-bit as they were imported. An AdapterHub folder \
            has them twice: pytorch_adapter.bin (torch.save's format, what load_adapter(dir) reads by \
            default) and adapter.safetensors (load_adapter(dir, use_safetensors=True)).

            Examples:
              peftpack export lora.peftpack -o lora-out/            # PeftModel.from_pretrained(base, "lora-out")
              peftpack export both.peftpack -o houlsby/ --format adapterhub --name houlsby
              peftpack export lora.peftpack -o lora.gguf --format gguf --dtype f16   # llama-cli --lora lora.gguf
              peftpack export lora.peftpack -o lora-mlx/ --format mlx     # mlx_lm.generate --adapter-path lora-mlx

            GGUF: a LoRA adapter as llama.cpp loads it (general.type = adapter), tensors named \
            after llama.cpp's (blk.N.attn_q.weight.lora_a …), q/k rows in llama.cpp's rotary order, \
            every module's true scale (α/r, α/√r for rsLoRA, rank/alpha patterns) folded into B so \
            llama.cpp's alpha/r rule reproduces ΔW exactly. Bases: Llama, Mistral, Qwen2, Qwen3, Gemma 2, Gemma 3, Phi-3, GPT-2. \
            DoRA, IA3, trained biases, whole tensors, prefix/prompt and bottleneck adapters are \
            refused with what to do instead.

            MLX: adapter_config.json + adapters.safetensors as mlx-lm loads them (lora_a [in, r], \
            lora_b [r, out], DoRA's m). Every module's scale is folded into B against one scale (the \
            most common), lower ranks zero-padded to the largest, keys and num_layers (mlx-lm adapts \
            the LAST num_layers layers) derived from the targets, with zero factors for modules of that \
            range the adapter leaves alone. Needs a pack imported with --base (the layer count). Bases: \
            Llama, Mistral, Qwen2, Qwen3. IA3, prefix/prompt/bottleneck, trained biases, whole tensors and \
            LoRA outside the layers' linear modules are refused with what to do instead.
            """)

    @Argument(help: "The pack to read.")
    var pack: String

    @Option(name: .shortAndLong, help: "The folder (or .gguf file) to write (must not exist unless --force).")
    var output: String

    @Option(help: "Output format (default: gguf for a .gguf output, else the adapter's own tool).")
    var format: PackExport.Format?

    @Option(help: "GGUF tensor type.")
    var dtype: GGUFTensorType = .f32

    @Option(help: "Which adapter, when the pack holds several.")
    var name: String?

    @Option(help: "The base model folder, for a pack imported without it: GGUF and MLX export need its architecture and layer count (default: the PEFT config's base_model_name_or_path when that is a local folder).")
    var base: String?

    @OptionGroup var overwrite: OverwriteOptions

    @OptionGroup var outputOptions: OutputOptions

    func run() throws {
        try reportingErrors {
            let report = try PackExport.run(pack: pack, output: output, format: format, name: name, force: overwrite.force, ggufType: dtype.elementType,
                                            baseFolder: base)
            if outputOptions.json {
                try printJSON(report)
            } else {
                print("wrote \(report.output) (\(report.format)): adapter \(report.adapter), \(report.tensors) tensors in \(report.files.joined(separator: ", "))")
            }
        }
    }
}
