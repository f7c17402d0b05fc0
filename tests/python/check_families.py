"""Model families (fixtures/data/families/<name>/), judged by transformers and PEFT themselves. For
every family folder, found by listing (a new family needs only its fixtures):
- every case imported with --base, then merged into the base by peftpack: the merged folder loads
  with AutoModelForCausalLM, keeps the tie PEFT's own merge keeps, and gives the adapter output;
- the same pack exported to PEFT loads with PeftModel.from_pretrained and gives the adapter output;
- a full-rank extract of model-ft, exported to PEFT, loads in PEFT and reproduces the fine-tune.

Runs in .venv/peft. Tolerances as check_tied_embeddings.py (absolute, on logits of magnitude ~3):
1e-5 where PEFT runs the exported tensors, bit-identical to the saved ones (only the reduction order
of BLAS differs); 1e-4 for merged weights and full-rank factors, the generator's bound for PEFT's
own merge (observed at most 5.1e-6 in these fixtures): a merged weight is rounded to fp32 once more
than the adapter path."""
import json
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file

from check_tied_embeddings import EXPORT_TOLERANCE, MERGE_TOLERANCE, expect_close, load, logits
from common import FIXTURES, Tally, reference, run_peftpack, scratch_dir

FAMILIES = FIXTURES / "families"
# Larger than any dimension of a fixture: extract clamps each module's rank to its smaller side.
FULL_RANK = "4096"


def family_folders():
    return sorted(path for path in FAMILIES.iterdir() if path.is_dir()) if FAMILIES.is_dir() else []


def case_folders(family):
    return sorted(path for path in (family / "cases").iterdir() if path.is_dir())


def imported_pack(family, case, work):
    pack = work / f"{family.name}-{case.name}.peftpack"
    if not pack.exists():
        run_peftpack("import", str(case / "adapter"), "--base", str(family / "model"), "-o", str(pack), "--quiet")
    return pack


def check_merge(family, case, work):
    tensors, metadata = reference(case.name, family / "cases")
    merged = work / f"{family.name}-{case.name}-merged"
    run_peftpack("merge", "--base", str(family / "model"), str(imported_pack(family, case, work)), "-o", str(merged),
                 "--quiet")
    model = load(merged)
    expected_tie = metadata["peft_merged_tie"] == "true"
    if model.config.tie_word_embeddings != expected_tie:
        raise AssertionError(f"tie_word_embeddings is {model.config.tie_word_embeddings}; PEFT's merge keeps "
                             f"{expected_tie}")
    expect_close(logits(model, tensors["input_ids"]), tensors["output_adapter"], MERGE_TOLERANCE)


def check_export(family, case, work):
    tensors, _ = reference(case.name, family / "cases")
    exported = work / f"{family.name}-{case.name}-export"
    run_peftpack("export", str(imported_pack(family, case, work)), "-o", str(exported), "--format", "peft")
    model = PeftModel.from_pretrained(load(family / "model"), str(exported)).eval()
    expect_close(logits(model, tensors["input_ids"]), tensors["output_adapter"], EXPORT_TOLERANCE)


def check_extract(family, work):
    tensors = load_file(str(family / "model-ft.ref.safetensors"))
    pack = work / f"{family.name}-ft.peftpack"
    exported = work / f"{family.name}-ft-export"
    run_peftpack("extract", "--base", str(family / "model"), "--finetuned", str(family / "model-ft"), "-o", str(pack),
                 "--rank", FULL_RANK, "--exact", "--quiet")
    run_peftpack("export", str(pack), "-o", str(exported), "--format", "peft")
    config = json.loads((exported / "adapter_config.json").read_text())
    if config.get("peft_type") != "LORA":
        raise AssertionError(f"exported peft_type {config.get('peft_type')}, expected LORA")
    model = PeftModel.from_pretrained(load(family / "model"), str(exported)).eval()
    expect_close(logits(model, tensors["input_ids"]), tensors["output_adapter"], MERGE_TOLERANCE)


def main() -> int:
    torch.manual_seed(0)
    work = scratch_dir()
    tally = Tally("model families: transformers and PEFT load what peftpack writes")
    for family in family_folders():
        for case in case_folders(family):
            label = f"{family.name}/{case.name}"
            tally.check(f"{label}: merge loads in transformers = adapter",
                        lambda f=family, c=case: check_merge(f, c, work))
            tally.check(f"{label}: export loads in PEFT = adapter", lambda f=family, c=case: check_export(f, c, work))
        if (family / "model-ft").is_dir():
            tally.check(f"{family.name}: full-rank extract of model-ft, in PEFT = fine-tune",
                        lambda f=family: check_extract(f, work))
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
