"""Round trip through peftpack, judged by AdapterHub itself: every AdapterHub fixture adapter (both
the pickled .bin and the safetensors variant) is imported into a pack and exported back; the
exported folder must load with `model.load_adapter` (its default call, which reads
pytorch_adapter.bin, and with use_safetensors=True) and reproduce the reference output.

Runs in .venv/adapters (adapters pins transformers 4.57). Tolerance 1e-5 (absolute), the
generator's bound for reloading a saved adapter: the tensors are bit-identical, so only BLAS
reduction order can differ."""
import sys

import adapters
import torch

from common import CASES, FIXTURES, Tally, load_base, model_output, reference, run_peftpack, scratch_dir

TOLERANCE = 1e-5


def check_case(case: str, variant: str, work):
    tensors, metadata = reference(case)
    pack = work / f"{case}-{variant}.peftpack"
    exported = work / f"{case}-{variant}-export"
    # With its base: adapters saves a causal LM's own lm_head beside the adapter (llama_pfeiffer),
    # which import accepts only when it is the base's.
    run_peftpack("import", str(CASES / case / variant), "-o", str(pack), "--base", str(FIXTURES / metadata["base"]))
    run_peftpack("export", str(pack), "-o", str(exported), "--format", "adapterhub")
    # The default call reads pytorch_adapter.bin (torch.load, weights_only); use_safetensors=True
    # reads adapter.safetensors. The export must serve both.
    for options in ({}, {"use_safetensors": True}):
        model = load_base(metadata)
        adapters.init(model)
        name = model.load_adapter(str(exported), **options)
        model.set_active_adapters(name)
        output = model_output(model.eval(), tensors["input_ids"], metadata["output"])
        error = (output - tensors["output_adapter"]).abs().max().item()
        if not error <= TOLERANCE:
            raise AssertionError(f"load_adapter(dir, {options}): max |output - reference| = {error:.3g} > {TOLERANCE}")


def main() -> int:
    torch.manual_seed(0)
    work = scratch_dir()
    tally = Tally("adapterhub export loads in AdapterHub")
    for case_dir in sorted(CASES.iterdir()):
        for variant in ("adapter_bin", "adapter_safetensors"):
            if (case_dir / variant / "adapter_config.json").exists():
                tally.check(f"{case_dir.name}/{variant}",
                            lambda name=case_dir.name, v=variant: check_case(name, v, work))
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
