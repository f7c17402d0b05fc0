"""Packs with several adapters and the base bound by content, on artifacts made fresh with the real
stack (not the fixtures), as a new user would bring them: a Llama-shaped base unlike the fixtures',
PEFT save_pretrained of a model given three adapters with add_adapter (one rsLoRA), another
checkpoint of the same architecture (another seed) and the base converted to bf16.

- import of the save folder holds all three adapters; `verify --name X` matches PEFT's logits with X
  active (verify's default tolerance: two fp32 implementations of the same sum);
- `merge PACK:a --weight wa PACK:b --weight wb PACK:c --weight wc` equals PEFT's
  add_weighted_adapter(combination_type="cat") merged (8 fp32 ulps of each tensor's largest weight:
  PEFT rounds B·A and the sum in fp32, peftpack once from fp64);
- merging into the other checkpoint exits 2 naming the first tensor, writing nothing; with
  --trust-base it merges; into the bf16 copy it merges with one warning.

Runs in .venv/peft."""
import json
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

from common import Tally, run_peftpack, scratch_dir

ADAPTERS = {
    "default": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    "b": dict(r=6, lora_alpha=12, use_rslora=True, target_modules=["gate_proj", "down_proj"]),
    "c": dict(r=2, lora_alpha=2, target_modules=["o_proj", "q_proj"]),
}
WEIGHTS = {"default": 0.5, "b": 1.25, "c": -0.75}


def config():
    return LlamaConfig(vocab_size=300, hidden_size=96, intermediate_size=192, num_hidden_layers=3, num_attention_heads=6,
                       num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False, initializer_range=0.1)


def make_artifacts(work):
    torch.manual_seed(11)
    base = LlamaForCausalLM(config()).eval()
    base.save_pretrained(work / "base")
    base.to(torch.bfloat16).save_pretrained(work / "base-bf16")
    torch.manual_seed(12)
    LlamaForCausalLM(config()).save_pretrained(work / "other")
    model = get_peft_model(load(work / "base"), LoraConfig(init_lora_weights=False, **ADAPTERS["default"]))
    for name in ("b", "c"):
        model.add_adapter(name, LoraConfig(init_lora_weights=False, **ADAPTERS[name]))
    model.save_pretrained(work / "multi")
    input_ids = torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(3))
    reference = {"input_ids": input_ids}
    with torch.no_grad():
        for name in ADAPTERS:
            model.set_adapter(name)
            reference[f"output_{name}"] = model(input_ids=input_ids).logits.float().contiguous()
    save_file(reference, str(work / "reference.safetensors"))
    names = list(WEIGHTS)
    model.add_weighted_adapter(names, [WEIGHTS[n] for n in names], "mix", combination_type="cat")
    model.set_adapter("mix")
    merged = model.merge_and_unload(adapter_names=["mix"])
    save_file({n: p.detach().contiguous() for n, p in merged.named_parameters()}, str(work / "peft-mix.safetensors"))


def load(folder):
    return LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32, attn_implementation="eager").eval()


def check_import(work):
    report = json.loads(run_peftpack("import", str(work / "multi"), "-o", str(work / "multi.peftpack"), "--base",
                                     str(work / "base"), "--json").stdout)
    if report["adapters"] != ["default", "b", "c"]:
        raise AssertionError(f"imported {report['adapters']}")
    for name in ADAPTERS:
        result = run_peftpack("verify", str(work / "multi.peftpack"), "--base", str(work / "base"), "--name", name,
                              "--reference", str(work / "reference.safetensors"), "--key", f"output_{name}", check=False)
        if result.returncode != 0:
            raise AssertionError(f"{name}: {result.stdout.strip()} {result.stderr.strip()}")


def check_weighted_merge(work):
    specs = []
    for name, weight in WEIGHTS.items():
        specs += [f"{work / 'multi.peftpack'}:{name}", "--weight", str(weight)]
    run_peftpack("merge", "--base", str(work / "base"), *specs, "-o", str(work / "ours-mix"), "--quiet")
    ours, peft = load_file(str(work / "ours-mix" / "model.safetensors")), load_file(str(work / "peft-mix.safetensors"))
    changed, worst_ulps = 0, 0.0
    for name, expected in peft.items():
        scale = expected.abs().max().item()
        ulp = torch.finfo(torch.float32).eps * 2.0 ** torch.floor(torch.log2(torch.tensor(scale))).item()
        worst = (ours[name] - expected).abs().max().item()
        if worst > 8 * ulp:
            raise AssertionError(f"{name}: {worst:.3g} from PEFT's weighted merge (8 ulps: {8 * ulp:.3g})")
        worst_ulps = max(worst_ulps, worst / ulp)
        changed += int(not torch.equal(expected, load_file(str(work / "base" / "model.safetensors"))[name]))
    if changed != 3 * 2 + 3 * 2 + 3:  # q and v, gate and down, o: three layers each
        raise AssertionError(f"PEFT's merge changed {changed} tensors")
    print(f"     weighted merge: at most {worst_ulps:.2f} ulps of a tensor's largest weight from PEFT's", flush=True)


def check_other_checkpoint(work):
    result = run_peftpack("merge", "--base", str(work / "other"), str(work / "multi.peftpack") + ":b", "-o", str(work / "refused"), check=False)
    lines = result.stderr.strip().splitlines()
    if result.returncode != 2 or len(lines) != 1 or "model.layers.0.mlp.down_proj.weight holds other values" not in lines[0]:
        raise AssertionError(f"exit {result.returncode}: {result.stderr.strip()}")
    if (work / "refused").exists():
        raise AssertionError("a refused merge wrote its output")
    run_peftpack("merge", "--base", str(work / "other"), str(work / "multi.peftpack") + ":b", "-o", str(work / "trusted"), "--trust-base", "--quiet")


def check_converted_base(work):
    result = run_peftpack("merge", "--base", str(work / "base-bf16"), str(work / "multi.peftpack"), "-o", str(work / "bf16"), "--quiet")
    lines = result.stderr.strip().splitlines()
    if len(lines) != 1 or "F32 → BF16" not in lines[0] or "content cannot be compared" not in lines[0]:
        raise AssertionError(f"expected one dtype warning, got: {result.stderr.strip()}")


def main() -> int:
    work = scratch_dir()
    tally = Tally("several adapters and the base bound by content, on fresh artifacts")
    make_artifacts(work)
    tally.check("every adapter of a PEFT save folder imports and matches PEFT", lambda: check_import(work))
    tally.check("PACK:ADAPTER merge with weights equals PEFT's add_weighted_adapter", lambda: check_weighted_merge(work))
    tally.check("another checkpoint is refused naming its first tensor", lambda: check_other_checkpoint(work))
    tally.check("the base converted to bf16 merges with one warning", lambda: check_converted_base(work))
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
