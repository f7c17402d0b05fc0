"""Round trip through peftpack, judged by PEFT itself: every PEFT fixture adapter is imported into a
pack and exported back to a folder, which PeftModel.from_pretrained must load unchanged and which
must reproduce the reference output the generator recorded. The configs/ cases too: trainable
tokens, sequence-classification heads, target rules; the narrowed_* ones are imported with
--drop-unloaded, so PEFT loads the exported folder as it loaded the original.

Runs in .venv/peft. Tolerance 1e-5 (absolute): the exported tensors are bit-identical and PEFT runs
the same code, so the outputs should agree exactly; 1e-5 is the generator's own bound for reloading
a saved adapter and only absorbs nondeterministic BLAS reduction order."""
import sys

import torch
from peft import PeftModel

from common import CASES, CONFIG_CASES, Tally, load_base, model_output, reference, run_peftpack, scratch_dir

TOLERANCE = 1e-5


def check_case(case: str, work, root=CASES, import_options=()):
    tensors, metadata = reference(case, root)
    pack = work / f"{case}.peftpack"
    exported = work / f"{case}-export"
    run_peftpack("import", str(root / case / "adapter"), "-o", str(pack), *import_options)
    run_peftpack("export", str(pack), "-o", str(exported), "--format", "peft")
    model = PeftModel.from_pretrained(load_base(metadata), str(exported)).eval()
    output = model_output(model, tensors["input_ids"], metadata["output"])
    expected = tensors["output_adapter"]
    if output.shape != expected.shape:
        raise AssertionError(f"output shape {tuple(output.shape)} != reference {tuple(expected.shape)}")
    error = (output - expected).abs().max().item()
    if not error <= TOLERANCE:
        raise AssertionError(f"max |output - reference| = {error:.3g} > {TOLERANCE}")


def main() -> int:
    torch.manual_seed(0)
    work = scratch_dir()
    tally = Tally("peft export loads in PEFT")
    for case_dir in sorted(CASES.iterdir()):
        if (case_dir / "adapter" / "adapter_config.json").exists():
            tally.check(case_dir.name, lambda name=case_dir.name: check_case(name, work))
    for case_dir in sorted(CONFIG_CASES.iterdir()):
        if (case_dir / f"{case_dir.name}.ref.safetensors").exists():
            options = ("--drop-unloaded",) if case_dir.name.startswith("narrowed_") else ()
            tally.check(f"configs/{case_dir.name}",
                        lambda name=case_dir.name, options=options: check_case(name, work, CONFIG_CASES, options))
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
