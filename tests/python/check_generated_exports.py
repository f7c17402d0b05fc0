"""Packs peftpack makes itself, judged by PEFT. Stacked packs: two fixture LoRAs stacked exactly
(and recompressed to rank 4), and a prefix and a prompt adapter stacked with themselves
(virtual tokens concatenated), export to a folder PEFT loads, whose logits equal peftpack's runtime
applying the pack. Extracted packs: `peftpack extract` on the fixtures' full fine-tune, exported
to a PEFT folder, must load in PeftModel.from_pretrained (rank_pattern/alpha_pattern when ranks
differ, modules_to_save for the embeddings and norms stored whole) and give the same logits as
peftpack's runtime applying the pack (`peftpack verify --reference` on PEFT's logits). At full
rank, PEFT's logits must also equal the fine-tune's own (transformers, recorded by the generator).

Runs in .venv/peft. Tolerances: verify's default (1e-5 of the largest logit): PEFT and the Swift
runtime are two fp32 implementations of the same sum; 1e-4 absolute against the fine-tune at full
rank, where B·A reproduces ΔW only to fp32 rounding of the SVD."""
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file

from common import CASES, FIXTURES, MODELS, Tally, load_base, run_peftpack, scratch_dir

REFERENCE = FIXTURES / "extract_llama" / "reference.safetensors"
RUNS = {
    "rank8": ["--rank", "8"],
    "energy0.9": ["--energy", "0.9"],
    "budget60K": ["--budget", "60K"],
    "rank64-full": ["--rank", "64"],
}


def check(name, options, work):
    pack, exported = work / f"{name}.peftpack", work / f"{name}-peft"
    run_peftpack("extract", "--base", str(MODELS / "llama-tiny"), "--finetuned", str(MODELS / "llama-tiny-ft"),
                 "-o", str(pack), "--quiet", *options)
    run_peftpack("export", str(pack), "-o", str(exported), "--format", "peft")
    reference = load_file(str(REFERENCE))
    model = PeftModel.from_pretrained(load_base({"base": "models/llama-tiny"}), str(exported)).eval()
    with torch.no_grad():
        logits = model(input_ids=reference["input_ids"]).logits.float().contiguous()
    peft_reference = work / f"{name}.peft-logits.safetensors"
    save_file({"input_ids": reference["input_ids"], "output_adapter": logits}, str(peft_reference))
    result = run_peftpack("verify", str(pack), "--base", str(MODELS / "llama-tiny"), "--reference", str(peft_reference), check=False)
    if result.returncode != 0:
        raise AssertionError(f"peftpack's runtime and PEFT disagree: {result.stdout.strip()} {result.stderr.strip()}")
    if name.endswith("-full"):
        error = (logits - reference["output_adapter"]).abs().max().item()
        if not error <= 1e-4:
            raise AssertionError(f"full-rank extraction in PEFT is {error:.3g} from the fine-tune's logits")


def check_stack(name, cases, options, work):
    packs = []
    for case in cases:
        packs.append(str(work / f"{case}.peftpack"))
        # Several stacks share a case's pack, and import refuses to replace an existing output.
        if not (work / f"{case}.peftpack").exists():
            run_peftpack("import", str(CASES / case / "adapter"), "-o", packs[-1])
    pack, exported = work / f"{name}.peftpack", work / f"{name}-peft"
    run_peftpack("stack", *packs, "-o", str(pack), *options)
    run_peftpack("export", str(pack), "-o", str(exported), "--format", "peft")
    input_ids = load_file(str(REFERENCE))["input_ids"]
    model = PeftModel.from_pretrained(load_base({"base": "models/llama-tiny"}), str(exported)).eval()
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits.float().contiguous()
    peft_reference = work / f"{name}.peft-logits.safetensors"
    save_file({"input_ids": input_ids, "output_adapter": logits}, str(peft_reference))
    result = run_peftpack("verify", str(pack), "--base", str(MODELS / "llama-tiny"), "--reference", str(peft_reference), check=False)
    if result.returncode != 0:
        raise AssertionError(f"peftpack's runtime and PEFT disagree: {result.stdout.strip()} {result.stderr.strip()}")


def main() -> int:
    torch.manual_seed(0)
    work = scratch_dir()
    tally = Tally("extracted and stacked packs load in PEFT")
    for name, options in RUNS.items():
        tally.check(name, lambda name=name, options=options: check(name, options, work))
    loras, mix = ("llama_lora", "llama_rslora_patterns"), ["--weight", "0.7", "--weight", "-0.4"]
    stacks = {
        "stack-cat": (loras, mix),
        "stack-rank4": (loras, mix + ["--rank", "4"]),
        "stack-prefix": (("llama_prefix", "llama_prefix"), []),
        "stack-prompt": (("llama_prompt_tuning", "llama_prompt_tuning"), []),
    }
    for name, (cases, options) in stacks.items():
        tally.check(name, lambda name=name, cases=cases, options=options: check_stack(name, cases, options, work))
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
