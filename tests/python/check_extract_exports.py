"""Extracted packs, judged by PEFT: `peftpack extract` on the fixtures' full fine-tune, exported
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

from common import CASES, MODELS, Tally, load_base, run_peftpack, scratch_dir

REFERENCE = CASES / "extract_llama" / "reference.safetensors"
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


def main() -> int:
    torch.manual_seed(0)
    work = scratch_dir()
    tally = Tally("extracted packs load in PEFT")
    for name, options in RUNS.items():
        tally.check(name, lambda name=name, options=options: check(name, options, work))
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
