"""bitsandbytes-quantized bases as a QLoRA user brings them, made fresh with the real stack (not the
fixtures): a Llama-shaped model unlike the fixtures' quantized by transformers on CPU to NF4 with
double quantization, to FP4 and to LLM.int8, saved with save_pretrained, and a PEFT LoRA made on
each quantized model (init_lora_weights=False so it changes the output).

For each base:
- `import --base QUANTIZED` records it; `verify --reference` matches the logits of PEFT on the
  quantized model. 4-bit: PEFT + bnb compute in the compute dtype (fp32 here) on the dequantized
  weights, so verify's default fp32 tolerance applies. LLM.int8 also quantizes the activations
  to int8 at run time, which no dequantized model reproduces: its reference is PEFT on the fp32
  model whose weights are bnb's int8 dequantization (`int8_vectorwise_dequant`, what PEFT's own
  merge into an 8-bit layer uses).
- `merge` writes a plain model: transformers loads it without a quantization_config, and every
  merged weight equals bnb's dequantization plus PEFT's ΔW = B·A·scale computed in fp64 and
  rounded once to the quant state's dtype (fp32): the exact merge, bit for bit but for fp64
  summation-order ties (at most 1 ulp, counted).
- `verify --merged` on the output passes.

Runs in .venv/bnb (bitsandbytes 0.50)."""
import json
import sys

import bitsandbytes.functional as bnbf
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

from common import Tally, run_peftpack, scratch_dir

TARGETS = ["q_proj", "v_proj", "down_proj"]


def config():
    return LlamaConfig(vocab_size=320, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False, initializer_range=0.05)


QUANTIZATIONS = {
    "nf4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.float32),
    "fp4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_compute_dtype=torch.float32),
    "int8": BitsAndBytesConfig(load_in_8bit=True),
}


def logits(model, input_ids):
    with torch.no_grad():
        return model(input_ids=input_ids).logits


def dequantized_weights(model):
    """Each quantized Linear's weight as bnb dequantizes it, by checkpoint name."""
    import bitsandbytes as bnb
    weights = {}
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            weights[f"{name.removesuffix('.base_layer')}.weight"] = bnbf.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
        elif isinstance(module, bnb.nn.Linear8bitLt):
            weights[f"{name.removesuffix('.base_layer')}.weight"] = bnbf.int8_vectorwise_dequant(module.weight.data, module.weight.SCB).float()
    return weights


def make_artifacts(work, kind):
    torch.manual_seed(21)
    LlamaForCausalLM(config()).eval().save_pretrained(work / "fp32")
    quantized = LlamaForCausalLM.from_pretrained(work / "fp32", quantization_config=QUANTIZATIONS[kind], device_map="cpu").eval()
    quantized.save_pretrained(work / kind)
    torch.manual_seed(22)
    lora = get_peft_model(quantized, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False))
    with torch.no_grad():
        for name, parameter in lora.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    lora.save_pretrained(work / f"{kind}-lora")
    input_ids = torch.randint(0, 320, (2, 9), generator=torch.Generator().manual_seed(5))
    dequantized = dequantized_weights(lora.base_model.model)
    scale = 8 / 4
    deltas = {}
    for name, module in lora.base_model.model.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            a = module.lora_A["default"].weight.detach().double()
            b = module.lora_B["default"].weight.detach().double()
            deltas[f"{name}.weight"] = b @ a * scale
    if kind == "int8":
        # The reference: PEFT on the fp32 model holding bnb's int8 dequantization.
        plain = LlamaForCausalLM.from_pretrained(work / "fp32").eval()
        state = plain.state_dict()
        for name, value in dequantized.items():
            state[name] = value
        plain.load_state_dict(state)
        torch.manual_seed(22)
        reference_model = get_peft_model(plain, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False))
        factors = {name: value for name, value in lora.state_dict().items() if "lora_" in name}
        missing = reference_model.load_state_dict(factors, strict=False)
        assert not missing.unexpected_keys, missing.unexpected_keys
        expected = logits(reference_model.eval(), input_ids)
    else:
        expected = logits(lora, input_ids)
    save_file({"input_ids": input_ids, "output_adapter": expected.contiguous()}, str(work / f"{kind}.ref.safetensors"))
    return dequantized, deltas


def expect(tally, condition, name):
    def body():
        if not condition:
            raise AssertionError("not as expected")
    tally.check(name, body)


def check(kind, tally):
    work = scratch_dir()
    dequantized, deltas = make_artifacts(work, kind)
    pack = work / f"{kind}.peftpack"
    run_peftpack("import", str(work / f"{kind}-lora"), "-o", str(pack), "--base", str(work / kind))
    result = run_peftpack("verify", str(pack), "--base", str(work / kind), "--reference", str(work / f"{kind}.ref.safetensors"), check=False)
    expect(tally, result.returncode == 0, f"{kind}: verify --reference against PEFT on the quantized base: {result.stdout.strip()}{result.stderr.strip()}")

    merged = work / f"{kind}-merged"
    run_peftpack("merge", "--base", str(work / kind), str(pack), "-o", str(merged))
    merged_config = json.loads((merged / "config.json").read_text())
    expect(tally, "quantization_config" not in merged_config, f"{kind}: the merged config.json has no quantization_config")
    model = LlamaForCausalLM.from_pretrained(merged).eval()
    reference = load_file(str(work / f"{kind}.ref.safetensors"))
    error = (logits(model, reference["input_ids"]) - reference["output_adapter"]).abs().max().item()
    scale = reference["output_adapter"].abs().max().item()
    expect(tally, error <= 1e-5 + 1e-4 * scale, f"{kind}: transformers on the merged output vs PEFT on the quantized base: max abs {error:.3g}")

    stored = {}
    for path in sorted(merged.glob("*.safetensors")):
        stored.update(load_file(str(path)))
    worst_ulps, ties = 0, 0
    for name, weight in dequantized.items():
        # An untouched weight is copied as bnb dequantizes it (a -0.0 stays -0.0).
        expected = (weight.double() + deltas[name]).float() if name in deltas else weight
        actual = stored[name]
        if actual.dtype != torch.float32 or actual.shape != expected.shape:
            expect(tally, False, f"{kind}: {name} stored as {actual.dtype} {tuple(actual.shape)}")
            continue
        ulps = (actual.view(torch.int32).long() - expected.view(torch.int32).long()).abs()
        worst_ulps = max(worst_ulps, int(ulps.max()))
        ties += int((ulps > 0).sum())
    expect(tally, worst_ulps <= 1, f"{kind}: merged weights vs bnb dequantization + ΔW in fp64 rounded once: worst {worst_ulps} ulp, {ties} elements off by one")
    result = run_peftpack("verify", str(pack), "--base", str(work / kind), "--merged", str(merged), check=False)
    expect(tally, result.returncode == 0, f"{kind}: verify --merged on the output: {result.stdout.strip()}")


def main():
    tally = Tally("quantized bases (bitsandbytes)")
    for kind in QUANTIZATIONS:
        check(kind, tally)
    sys.exit(tally.finish())


if __name__ == "__main__":
    main()
