"""`peftpack convert --to lora` judged by PEFT 0.21 (in .venv/peft), on the LoHa, LoKr, AdaLoRA and
VeRA adapters PEFT trained (fixtures/data/lycoris, fixtures/data/adalora, fixtures/data/vera):

- exact conversion: the exported LoRA loads with PeftModel.from_pretrained and its output equals
  PEFT's own output for the source adapter within 1e-5 relative to the largest |output| (fp32;
  peftpack factors the ΔW exactly and rounds the factors once, PEFT forms it in fp32);
- at a rank below the exact one (--rank 2, --max-error 0.5): every module's reported relative
  Frobenius error equals ‖ΔW_source − ΔW_lora‖_F / ‖ΔW_source‖_F with both ΔW from PEFT's
  get_delta_weight (within 1e-4 absolute: fp32 factors and fp32 products on both sides), and
  equals the optimal truncation error of ΔW_source's own singular values (Eckart–Young, torch's
  float64 SVD), so the result is the best LoRA of that rank; --max-error keeps every module's
  error at or below the bound;
- DoRA and IA3 with --base (their change depends on W): at --max-error 1e-6 the LoRA reproduces
  PEFT's output for the source adapter within 1e-5; PEFT's own convert_to_lora at full energy is
  measured beside it on DoRA: it factors get_delta_weight, s·B·A without the magnitude, and misses
  the DoRA output by 0.46 of its largest logit (the magnitude is what it drops)."""
import json
import sys

import torch
from peft import PeftModel

from common import FIXTURES, Tally, load_base, model_output, reference, run_peftpack, scratch_dir

OUTPUT_TOLERANCE = 1e-5
ERROR_TOLERANCE = 1e-4
CASES_LORA = FIXTURES / "cases"
CASE_ROOTS = [FIXTURES / "lycoris" / "cases", FIXTURES / "adalora" / "cases", FIXTURES / "vera" / "cases"]


def delta_weights(model):
    deltas = {}
    for name, module in model.named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "active_adapters"):
            deltas[name.removeprefix("base_model.model.")] = module.get_delta_weight("default").detach().double()
    return deltas


def root_of(case):
    return next(root for root in CASE_ROOTS if (root / case).is_dir())


def converted(case, work, *rule):
    CASES = root_of(case)
    tensors, metadata = reference(case, CASES)
    base = FIXTURES / metadata["base"]
    pack, lora, folder = work / f"{case}.peftpack", work / f"{case}-{'-'.join(rule) or 'exact'}.peftpack", work / f"{case}-{'-'.join(rule) or 'exact'}-peft"
    if not pack.exists():
        run_peftpack("import", str(CASES / case / "adapter"), "--base", str(base), "-o", str(pack))
    report = json.loads(run_peftpack("convert", str(pack), "--to", "lora", *rule, "-o", str(lora), "--json").stdout)
    run_peftpack("export", str(lora), "--format", "peft", "-o", str(folder))
    return tensors, metadata, report, folder


def check_exact(case, work):
    tensors, metadata, report, folder = converted(case, work)
    model = PeftModel.from_pretrained(load_base(metadata), str(folder)).eval()
    output = model_output(model, tensors["input_ids"], metadata["output"])
    expected = tensors["output_adapter"]
    error = ((output - expected).abs().max() / expected.abs().max()).item()
    if not error <= OUTPUT_TOLERANCE:
        raise AssertionError(f"PEFT on the exact LoRA vs PEFT on the {report['from']}: {error:.3g} > {OUTPUT_TOLERANCE}")
    ranks = sorted({m["rank"] for m in report["modules"]})
    print(f"     {case}: exact LoRA (ranks {ranks}) reproduces PEFT's output to {error:.2g}")


def check_truncated(case, work, *rule):
    _, metadata, report, folder = converted(case, work, *rule)
    source = delta_weights(PeftModel.from_pretrained(load_base(metadata), str(root_of(case) / case / "adapter")))
    lora = delta_weights(PeftModel.from_pretrained(load_base(metadata), str(folder)))
    worst = 0.0
    for module in report["modules"]:
        target = module["target"]
        exact = source[target]
        actual = (exact - lora[target]).norm() / exact.norm()
        singular = torch.linalg.svdvals(exact)
        optimal = (singular[module["rank"]:].square().sum() / singular.square().sum()).sqrt()
        for what, value in (("measured", actual.item()), ("optimal", optimal.item())):
            if abs(value - module["relativeError"]) > ERROR_TOLERANCE:
                raise AssertionError(f"{target}: reported error {module['relativeError']:.6g}, {what} {value:.6g}")
        if rule[0] == "--max-error" and not module["relativeError"] <= float(rule[1]):
            raise AssertionError(f"{target}: error {module['relativeError']:.4g} above --max-error {rule[1]}")
        worst = max(worst, abs(actual.item() - module["relativeError"]))
    print(f"     {case} {' '.join(rule)}: {len(report['modules'])} modules, reported errors within {worst:.2g} of PEFT's ΔW and optimal")


def check_with_base(case, work):
    tensors, metadata = reference(case)
    base = FIXTURES / metadata["base"]
    pack, lora, folder = work / f"{case}.peftpack", work / f"{case}-base.peftpack", work / f"{case}-base-peft"
    run_peftpack("import", str(CASES_LORA / case / "adapter"), "--base", str(base), "-o", str(pack))
    run_peftpack("convert", str(pack), "--to", "lora", "--base", str(base), "--max-error", "1e-6", "-o", str(lora))
    run_peftpack("export", str(lora), "--format", "peft", "-o", str(folder))
    expected = tensors["output_adapter"]
    model = PeftModel.from_pretrained(load_base(metadata), str(folder)).eval()
    ours = ((model_output(model, tensors["input_ids"], metadata["output"]) - expected).abs().max() / expected.abs().max()).item()
    if not ours <= OUTPUT_TOLERANCE:
        raise AssertionError(f"peftpack's LoRA of {case} vs PEFT's {case}: {ours:.3g} > {OUTPUT_TOLERANCE}")
    line = f"     {case}: peftpack's LoRA (with the base) reproduces PEFT's output to {ours:.2g}"
    if "dora" in case:
        from peft import convert_to_lora, get_peft_model, set_peft_model_state_dict
        source = PeftModel.from_pretrained(load_base(metadata), str(CASES_LORA / case / "adapter")).eval()
        config, state = convert_to_lora(source, 1.0)
        converted = get_peft_model(load_base(metadata), config)
        set_peft_model_state_dict(converted, state)
        converted.eval()
        theirs = ((model_output(converted, tensors["input_ids"], metadata["output"]) - expected).abs().max() / expected.abs().max()).item()
        if not theirs > 1e-3:
            raise AssertionError(f"PEFT's convert_to_lora now reproduces {case} ({theirs:.3g}): update the docs that say it drops the magnitude")
        line += f"; PEFT's convert_to_lora at full energy misses it by {theirs:.2g} (it drops the DoRA magnitude)"
    print(line)


def main() -> int:
    work = scratch_dir()
    tally = Tally("PEFT loads peftpack's converted LoRAs")
    for case in sorted(p.name for root in CASE_ROOTS for p in root.iterdir()):
        tally.check(f"{case} exact", lambda case=case: check_exact(case, work))
        tally.check(f"{case} --rank 2", lambda case=case: check_truncated(case, work, "--rank", "2"))
        tally.check(f"{case} --max-error 0.5", lambda case=case: check_truncated(case, work, "--max-error", "0.5"))
    for case in ["llama_dora", "gpt2_dora", "llama_ia3"]:
        tally.check(f"{case} --base", lambda case=case: check_with_base(case, work))
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
