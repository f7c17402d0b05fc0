"""MLX adapters through peftpack to PEFT, judged by PEFT, in .venv/peft (the MLX half is
check_mlx_adapters.py, in .venv/mlx):

- adapters mlx-lm made itself (fixtures/data/mlx_adapters) imported with their base and exported
  with `--format peft`: PeftModel.from_pretrained loads the folder and its logits equal MLX's own
  (1e-4 relative to the largest |logit|: torch and MLX sum in different orders, 7e-7 measured on the
  base alone).
- PEFT → MLX → PEFT: each PEFT fixture adapter is exported to MLX, that folder imported again and
  exported to PEFT; every module's ΔW (PEFT's get_delta_weight) and DoRA magnitude must equal the
  original's within fp32 rounding (1e-6 relative to the module's largest |ΔW|: folding a module's
  scale into B rounds once per element, zero-padded ranks add exact zeros), and every module the
  MLX range added (mlx-lm adapts whole layers) must have ΔW exactly 0.
- an MLX full fine-tune has no PEFT form: its export is refused in one line, and `peftpack merge`
  of its pack, loaded by transformers, must reproduce MLX's logits (same tolerance)."""
import json
import sys

import torch
import transformers
from peft import PeftModel
from peft.tuners.lora import LoraLayer

from common import CASES, FIXTURES, Tally, load_base, model_output, reference, run_peftpack, scratch_dir

LOGITS_TOLERANCE = 1e-4
DELTA_TOLERANCE = 1e-6
MLX_CASES = FIXTURES / "mlx_adapters"
ROUND_TRIP_CASES = [
    CASES / "llama_lora",
    CASES / "llama_rslora_patterns",
    CASES / "llama_dora",
    FIXTURES / "families" / "mistral" / "cases" / "mistral_lora",
    FIXTURES / "families" / "qwen3" / "cases" / "qwen3_dora",
    FIXTURES / "mlx_qwen2" / "cases" / "mlx_qwen2_lora",
]


def check_mlx_to_peft(case_dir, work):
    tensors, metadata = reference(case_dir.name, case_dir.parent)
    base = FIXTURES / metadata["base"]
    pack, exported = work / f"{case_dir.name}.peftpack", work / f"{case_dir.name}-peft"
    run_peftpack("import", str(case_dir / "adapter"), "--base", str(base), "-o", str(pack))
    if json.loads((case_dir / "adapter" / "adapter_config.json").read_text()).get("fine_tune_type") == "full":
        # No PEFT adapter type holds whole replacement tensors: export refuses in one line, and
        # the merged model is what transformers loads instead.
        refused = run_peftpack("export", str(pack), "--format", "peft", "-o", str(exported), check=False)
        if refused.returncode != 2 or len(refused.stderr.strip().splitlines()) != 1 or exported.exists():
            raise AssertionError(f"export of a full fine-tune to PEFT: exit {refused.returncode}, {refused.stderr!r}")
        run_peftpack("merge", "--base", str(base), str(pack), "-o", str(exported))
        model = transformers.AutoModelForCausalLM.from_pretrained(str(exported), dtype=torch.float32, attn_implementation="eager").eval()
        judge = "transformers on the merged model"
    else:
        judge = "PEFT"
        run_peftpack("export", str(pack), "--format", "peft", "-o", str(exported))
        model = PeftModel.from_pretrained(load_base(metadata), str(exported)).eval()
    output = model_output(model, tensors["input_ids"], metadata["output"])
    expected = tensors["output_adapter"]
    error = ((output - expected).abs().max() / expected.abs().max()).item()
    if not error <= LOGITS_TOLERANCE:
        raise AssertionError(f"max |{judge} - MLX| / max |MLX| = {error:.3g} > {LOGITS_TOLERANCE}")
    print(f"     {case_dir.name}: {judge} reproduces MLX's logits to {error:.2g} relative")


def lora_modules(model):
    return {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer) and "default" in module.lora_A}


def check_round_trip(case_dir, work):
    _, metadata = reference(case_dir.name, case_dir.parent)
    base = FIXTURES / metadata["base"]
    name = case_dir.name
    run_peftpack("import", str(case_dir / "adapter"), "--base", str(base), "-o", str(work / f"{name}.peftpack"))
    run_peftpack("export", str(work / f"{name}.peftpack"), "--format", "mlx", "-o", str(work / f"{name}-mlx"))
    run_peftpack("import", str(work / f"{name}-mlx"), "--base", str(base), "-o", str(work / f"{name}-mlx.peftpack"))
    run_peftpack("export", str(work / f"{name}-mlx.peftpack"), "--format", "peft", "-o", str(work / f"{name}-back"))
    original = lora_modules(PeftModel.from_pretrained(load_base(metadata), str(case_dir / "adapter")).eval())
    back = lora_modules(PeftModel.from_pretrained(load_base(metadata), str(work / f"{name}-back")).eval())
    missing = sorted(set(original) - set(back))
    if missing:
        raise AssertionError(f"modules lost on the way: {missing}")
    worst = 0.0
    with torch.no_grad():
        for module_name, module in back.items():
            delta = module.get_delta_weight("default")
            if module_name not in original:
                if delta.abs().max().item() != 0:
                    raise AssertionError(f"{module_name}: added by the MLX layer range but ΔW is not 0")
                continue
            expected = original[module_name].get_delta_weight("default")
            error = ((delta - expected).abs().max() / expected.abs().max()).item()
            if not error <= DELTA_TOLERANCE:
                raise AssertionError(f"{module_name}: max |ΔW round trip - ΔW| / max |ΔW| = {error:.3g} > {DELTA_TOLERANCE}")
            worst = max(worst, error)
            if "default" in original[module_name].lora_magnitude_vector:
                m0 = original[module_name].lora_magnitude_vector["default"].weight
                m1 = module.lora_magnitude_vector["default"].weight
                if not torch.equal(m0, m1):
                    raise AssertionError(f"{module_name}: DoRA magnitude changed")
    print(f"     {name}: {len(original)} modules, ΔW within {worst:.2g} relative, {len(back) - len(original)} zero modules added")


def main() -> int:
    torch.manual_seed(0)
    work = scratch_dir()
    tally = Tally("MLX adapters through peftpack load in PEFT")
    for case_dir in sorted(MLX_CASES.iterdir()):
        tally.check(f"mlx → peft {case_dir.name}", lambda case_dir=case_dir: check_mlx_to_peft(case_dir, work))
    for case_dir in ROUND_TRIP_CASES:
        tally.check(f"peft → mlx → peft {case_dir.name}", lambda case_dir=case_dir: check_round_trip(case_dir, work))
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
