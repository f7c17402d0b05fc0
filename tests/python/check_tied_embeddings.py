"""Tied embeddings (fixtures/data/tied), judged by transformers and PEFT themselves:
- every merged folder peftpack writes loads with AutoModelForCausalLM: the default merge (untie)
  gives PEFT's adapter output, `--tied-embeddings keep` gives PEFT's merge_and_unload output;
- every tied case imported with --base and exported back loads with PeftModel.from_pretrained and
  gives the adapter output;
- a full-rank extract of a tied fine-tune, exported to PEFT, reproduces the fine-tune's logits.

Runs in .venv/peft. Tolerances (absolute, logits of magnitude ~10): 1e-5 where PEFT runs the
bit-identical exported tensors (BLAS reduction order only); 1e-4 for merged weights and full-rank
factors, the generator's bound for a merge (observed at most 7e-6 here)."""
import json
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from common import FIXTURES, Tally, run_peftpack, scratch_dir

TIED = FIXTURES / "tied"
EXPORT_TOLERANCE = 1e-5
MERGE_TOLERANCE = 1e-4
UNTYING = ["qwen2_tied_modules_to_save_embed", "qwen2_tied_lora_embed", "qwen2_tied_lora_head",
           "qwen2_tied_modules_to_save_head", "gpt2_tied_lora_wte"]
LORA_ON_ONE_SIDE = ["qwen2_tied_lora_embed", "qwen2_tied_lora_head", "gpt2_tied_lora_wte"]
ENSURE_TYING = "qwen2_tied_lora_embed_ensure_tying"


def reference(case):
    path = TIED / "cases" / case / f"{case}.ref.safetensors"
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        metadata = json.loads(handle.read(length))["__metadata__"]
    return load_file(str(path)), metadata


def logits(model, input_ids):
    with torch.no_grad():
        return model(input_ids=input_ids).logits


def load(folder):
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, attn_implementation="eager").eval()


def expect_close(output, expected, tolerance):
    error = (output - expected).abs().max().item()
    if not error <= tolerance:
        raise AssertionError(f"max |output - reference| = {error:.3g} > {tolerance}")


def pack_of(case, work):
    _, metadata = reference(case)
    pack = work / f"{case}.peftpack"
    if not pack.exists():
        run_peftpack("import", str(TIED / "cases" / case / "adapter"), "--base", str(FIXTURES / metadata["base"]), "-o", str(pack))
    return pack


def check_merge(case, work, policy, key, tie):
    tensors, metadata = reference(case)
    merged = work / f"{case}-merged-{policy}"
    run_peftpack("merge", "--base", str(FIXTURES / metadata["base"]), str(pack_of(case, work)), "-o", str(merged),
                 "--tied-embeddings", policy, "--quiet")
    model = load(merged)
    if model.config.tie_word_embeddings != tie:
        raise AssertionError(f"tie_word_embeddings is {model.config.tie_word_embeddings}, expected {tie}")
    expect_close(logits(model, tensors["input_ids"]), tensors[key], MERGE_TOLERANCE)


def check_export(case, work):
    tensors, metadata = reference(case)
    exported = work / f"{case}-export"
    run_peftpack("export", str(pack_of(case, work)), "-o", str(exported), "--format", "peft")
    model = PeftModel.from_pretrained(load(FIXTURES / metadata["base"]), str(exported)).eval()
    expect_close(logits(model, tensors["input_ids"]), tensors["output_adapter"], EXPORT_TOLERANCE)


def check_extract(base, finetuned, embeddings, work):
    tensors = load_file(str(finetuned) + ".ref.safetensors")
    pack = work / f"{finetuned.name}-{embeddings}.peftpack"
    exported = work / f"{finetuned.name}-{embeddings}-export"
    run_peftpack("extract", "--base", str(base), "--finetuned", str(finetuned), "-o", str(pack), "--rank", "64",
                 "--exact", "--embeddings", embeddings, "--quiet")
    run_peftpack("export", str(pack), "-o", str(exported), "--format", "peft")
    model = PeftModel.from_pretrained(load(base), str(exported)).eval()
    output = logits(model, tensors["input_ids"])
    expect_close(output, tensors["output_adapter"], MERGE_TOLERANCE)


def main() -> int:
    torch.manual_seed(0)
    work = scratch_dir()
    tally = Tally("tied embeddings: transformers and PEFT load what peftpack writes")
    for case in UNTYING:
        tally.check(f"{case}: merge (untie) = adapter", lambda c=case: check_merge(c, work, "untie", "output_adapter", False))
    for case in LORA_ON_ONE_SIDE:
        tally.check(f"{case}: merge --tied-embeddings keep = PEFT's merge",
                    lambda c=case: check_merge(c, work, "keep", "output_peft_merged", True))
    tally.check(f"{ENSURE_TYING}: merge keeps the tie = adapter",
                lambda: check_merge(ENSURE_TYING, work, "untie", "output_adapter", True))
    for case in UNTYING + [ENSURE_TYING]:
        tally.check(f"{case}: export loads in PEFT", lambda c=case: check_export(c, work))
    qwen2, gpt2 = TIED / "models" / "qwen2-tied-tiny", FIXTURES / "models" / "gpt2-tiny"
    for base, finetuned, embeddings in [(qwen2, TIED / "models" / "qwen2-tied-tiny-ft", "full"),
                                        (qwen2, TIED / "models" / "qwen2-tied-tiny-ft", "lora"),
                                        (gpt2, TIED / "models" / "gpt2-tiny-ft", "full")]:
        tally.check(f"extract {finetuned.name} --embeddings {embeddings} at full rank, in PEFT",
                    lambda b=base, f=finetuned, e=embeddings: check_extract(b, f, e, work))
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
