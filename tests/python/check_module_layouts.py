"""Module layouts (fixtures/data/fifo), judged by transformers and PEFT themselves: LoRAs whose saved
fan_in_fan_out is not what PEFT ran (PEFT decides per module type), imported with and without
--base, merged (default untie; GPT-2's tied head), load with AutoModelForCausalLM and give PEFT's
adapter output; exported back they load with PeftModel.from_pretrained and give it too. Plus LoRA
on GPT-2's wpe, and extract --embeddings lora of the tied GPT-2 fine-tune (which factors wpe).

Runs in .venv/peft. Tolerances (absolute, logits of magnitude ~10), as check_tied_embeddings.py:
1e-5 where PEFT runs the bit-identical exported tensors (BLAS reduction order only); 1e-4 for
merged weights and full-rank factors (observed at most 3e-6 here)."""
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file

from check_tied_embeddings import EXPORT_TOLERANCE, MERGE_TOLERANCE, check_extract, expect_close, load, logits
from common import FIXTURES, Tally, run_peftpack, scratch_dir

FIFO = FIXTURES / "fifo"
BASES = {"gpt2_cproj_head": "models/gpt2-tiny", "gpt2_cattn_head": "models/gpt2-tiny",
         "llama_fifo_true": "models/llama-tiny", "gpt2_lora_wpe": "models/gpt2-tiny",
         "gpt2_ia3": "models/gpt2-tiny"}


def imported(case, work, with_base):
    pack = work / f"{case}-{'base' if with_base else 'nobase'}.peftpack"
    if not pack.exists():
        base = ["--base", str(FIXTURES / BASES[case])] if with_base else []
        run_peftpack("import", str(FIFO / case / "adapter"), *base, "-o", str(pack))
    return pack


def reference(case):
    return load_file(str(FIFO / case / f"{case}.ref.safetensors"))


def check_merge(case, work, with_base):
    tensors = reference(case)
    merged = work / f"{case}-{with_base}-merged"
    run_peftpack("merge", "--base", str(FIXTURES / BASES[case]), str(imported(case, work, with_base)), "-o", str(merged), "--quiet")
    expect_close(logits(load(merged), tensors["input_ids"]), tensors["output_adapter"], MERGE_TOLERANCE)


def check_export(case, work):
    tensors = reference(case)
    exported = work / f"{case}-export"
    run_peftpack("export", str(imported(case, work, True)), "-o", str(exported), "--format", "peft")
    model = PeftModel.from_pretrained(load(FIXTURES / BASES[case]), str(exported)).eval()
    expect_close(logits(model, tensors["input_ids"]), tensors["output_adapter"], EXPORT_TOLERANCE)


def main() -> int:
    torch.manual_seed(0)
    work = scratch_dir()
    tally = Tally("module layouts: transformers and PEFT load what peftpack writes")
    for case in BASES:
        for with_base in (False, True):
            tally.check(f"{case}: merge of a pack imported {'with' if with_base else 'without'} --base = adapter",
                        lambda c=case, b=with_base: check_merge(c, work, b))
        tally.check(f"{case}: export loads in PEFT", lambda c=case: check_export(c, work))
    gpt2 = FIXTURES / "models" / "gpt2-tiny"
    tally.check("extract gpt2-tiny-ft --embeddings lora at full rank, in PEFT",
                lambda: check_extract(gpt2, FIXTURES / "tied" / "models" / "gpt2-tiny-ft", "lora", work))
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
