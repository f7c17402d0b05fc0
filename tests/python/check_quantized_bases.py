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
- `merge --dtype same` keeps the base quantized. Its tensors are compared byte for byte with
  PEFT's `merge_and_unload()` state dict (what `save_pretrained` writes; transformers 5 cannot
  save a model loaded pre-quantized) on the same base and adapter: every untouched
  tensor and every companion must be equal; for a merged weight the elements (4-bit codes, int8
  codes) and blocks (absmax, SCB) that differ are counted and reported. PEFT quantizes
  fp32(fp32(W) + fp32(B·A)·s) with an fp32 matmul, peftpack W + ΔW rounded once from fp64, so an
  element that close to a decision bound may take the neighbouring code; to separate that from a
  quantizer error, bnb's own quantizer is also run on peftpack's fp32 sum, and its bytes must equal
  peftpack's exactly. transformers then loads the output from its config (load_in_4bit /
  load_in_8bit) and its logits are compared with PEFT's merged model. merge's report of what survived
  requantization (norm ratio, cosine with ΔW, codes unchanged, per weight) is recomputed here.
- `merge --dtype same --promote` with --min-survival splitting the merged weights in half, on the
  fp32 NF4 base at fp32 and on a bf16 NF4 base (bf16 compute, QLoRA's setup) at bf16: the promoted
  weights are bnb's dequantization plus ΔW in fp64 rounded once (0 ulp), stored without
  companions, every other tensor the `same` output's; config.json's llm_int8_skip_modules lists
  lm_head (transformers' default for a null list) and the promoted modules; transformers loads
  them as nn.Linear and the rest as Linear4bit, with logits equal to the plain torch model holding
  the same weights; verify --merged passes. --promote bf16 on the fp32 base is refused (exit 2):
  transformers keeps a pre-quantized model's float tensors in their stored dtype, so its forward
  would fail on bf16 weights among fp32 activations.

Runs in .venv/bnb (bitsandbytes 0.50)."""
import json
import shutil
import sys

import bitsandbytes.functional as bnbf
import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
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


# QLoRA's usual setup: a bf16 model quantized to NF4 with bf16 compute (merge --promote bf16).
NF4_BF16 = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def make_artifacts(work, kind, dtype=torch.float32, quantization=None):
    torch.manual_seed(21)
    plain_folder = work / str(dtype).removeprefix("torch.")
    LlamaForCausalLM(config()).to(dtype).eval().save_pretrained(plain_folder)
    quantized = LlamaForCausalLM.from_pretrained(plain_folder, quantization_config=quantization or QUANTIZATIONS[kind], device_map="cpu",
                                                 dtype=dtype).eval()
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
        plain = LlamaForCausalLM.from_pretrained(plain_folder).eval()
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


def read_all(folder):
    tensors = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(str(path)))
    return tensors


def codes_of(tensor, name):
    """A merged weight's elements as comparable codes: 4-bit nibbles unpacked, int8 as is."""
    if tensor.dtype == torch.uint8 and not name.endswith(("absmax", "quant_map")):
        flat = tensor.reshape(-1)
        return torch.stack([flat >> 4, flat & 0xF], dim=1).reshape(-1)
    return tensor.reshape(-1)


def bnb_quantized(kind, sums, ours, name):
    """bnb's quantizer on peftpack's fp32 W + ΔW, as Params4bit / Int8Params run it on CPU."""
    value = sums[name]
    if kind == "int8":
        codes, scales, _ = bnbf.int8_vectorwise_quant(value.to(torch.float16))
        return {name: codes, name.removesuffix("weight") + "SCB": scales}
    state = json.loads(bytes(ours[next(k for k in ours if k.startswith(name + ".quant_state."))].tolist()))
    packed, quant_state = bnbf.quantize_4bit(value, blocksize=state["blocksize"], quant_type=state["quant_type"],
                                             compress_statistics="nested_offset" in state)
    result = {name: packed}
    for key, tensor in quant_state.as_dict(packed=True).items():
        result[f"{name}.{key}"] = tensor
    return result


def check_same(kind, tally):
    work = scratch_dir()
    dequantized, deltas = make_artifacts(work, kind)
    pack = work / f"{kind}.peftpack"
    run_peftpack("import", str(work / f"{kind}-lora"), "-o", str(pack), "--base", str(work / kind))
    ours_folder = work / f"{kind}-same"
    report = json.loads(run_peftpack("merge", "--base", str(work / kind), str(pack), "-o", str(ours_folder), "--dtype", "same", "--json").stdout)
    expect(tally, "quantization_config" in json.loads((ours_folder / "config.json").read_text()),
           f"{kind} same: config.json keeps its quantization_config")

    base = LlamaForCausalLM.from_pretrained(work / kind, device_map="cpu").eval()
    peft_merged = PeftModel.from_pretrained(base, work / f"{kind}-lora").merge_and_unload().eval()
    # save_pretrained of a model loaded pre-quantized fails in transformers 5 (its weight
    # conversion has no reverse); the state dict is what it would write: bnb's Linear4bit /
    # Linear8bitLt put the packed weight and every companion in it.
    theirs = {name: tensor.detach().contiguous() for name, tensor in peft_merged.state_dict().items()}
    ours = read_all(ours_folder)
    expect(tally, set(ours) == set(theirs), f"{kind} same: the tensor names equal PEFT's ({sorted(set(ours) ^ set(theirs))[:4]})")

    merged_prefixes = tuple(name.removesuffix("weight") for name in deltas)
    untouched_differ = [n for n in ours if n in theirs and not n.startswith(merged_prefixes)
                        and not torch.equal(ours[n].view(torch.uint8) if ours[n].dtype != torch.uint8 else ours[n],
                                            theirs[n].view(torch.uint8) if theirs[n].dtype != torch.uint8 else theirs[n])]
    expect(tally, not untouched_differ, f"{kind} same: untouched tensors byte-identical to PEFT's ({untouched_differ[:3]})")

    sums = {name: (dequantized[name].double() + deltas[name]).float() for name in deltas}
    quantizer_mismatches, elements, differing, blocks, differing_blocks, other = 0, 0, 0, 0, 0, []
    states, offsets_differ = 0, 0
    for name in deltas:
        for key, tensor in bnb_quantized(kind, sums, ours, name).items():
            if not torch.equal(tensor.reshape(-1).view(torch.uint8), ours[key].reshape(-1).view(torch.uint8)):
                quantizer_mismatches += 1
        group = [n for n in ours if n.startswith(name.removesuffix("weight"))]
        for key in group:
            a, b = ours[key], theirs[key]
            if key == name:
                ca, cb = codes_of(a, key), codes_of(b, key)
                elements += ca.numel()
                differing += int((ca != cb).sum())
            elif key.endswith(("absmax", "SCB")):
                blocks += a.numel()
                differing_blocks += int((a.reshape(-1) != b.reshape(-1)).sum())
            elif ".quant_state." in key:
                states += 1
                ours_state, their_state = json.loads(bytes(a.tolist())), json.loads(bytes(b.tolist()))
                if ours_state != their_state:
                    offsets_differ += 1
                    ours_state.pop("nested_offset", None), their_state.pop("nested_offset", None)
                    if ours_state != their_state:
                        other.append(key)
                elif not torch.equal(a, b):
                    other.append(key)
            elif not torch.equal(a, b):
                other.append(key)
    expect(tally, quantizer_mismatches == 0,
           f"{kind} same: peftpack's requantized tensors equal bnb's quantizer on the same fp32 W + ΔW ({quantizer_mismatches} tensors differ)")
    expect(tally, not other, f"{kind} same: code tables, weight_format and quant states (but the nested offset) equal PEFT's, byte for byte where the offset agrees ({other[:3]})")
    print(f"  {kind} same vs PEFT merge_and_unload: {differing} of {elements} codes, {differing_blocks} of {blocks} "
          f"absmax/SCB values and {offsets_differ} of {states} quant states (nested offset) differ "
          f"(PEFT's fp32 W + fp32 ΔW vs W + ΔW rounded once)")
    expect(tally, differing <= max(1, elements // 1000), f"{kind} same: at most 0.1% of the merged codes differ from PEFT's ({differing} of {elements})")

    # PEFT's tensors saved the way save_pretrained would, so both are loaded alike: an LLM.int8
    # model fresh from disk runs differently from the one merge_and_unload left in memory.
    peft_folder = work / f"{kind}-peft-merged"
    shutil.copytree(ours_folder, peft_folder)
    save_file(theirs, str(peft_folder / "model.safetensors"), metadata={"format": "pt"})
    loaded = LlamaForCausalLM.from_pretrained(ours_folder, device_map="cpu").eval()
    quantized_type = "Linear8bitLt" if kind == "int8" else "Linear4bit"
    expect(tally, any(type(m).__name__ == quantized_type for m in loaded.modules()),
           f"{kind} same: transformers loads the output quantized ({quantized_type}) from its config")
    input_ids = torch.randint(0, 320, (2, 9), generator=torch.Generator().manual_seed(5))
    reference = logits(LlamaForCausalLM.from_pretrained(peft_folder, device_map="cpu").eval(), input_ids)
    error = (logits(loaded, input_ids) - reference).abs().max().item()
    scale = reference.abs().max().item()
    print(f"  {kind} same: logits of the loaded output vs PEFT's merged tensors loaded alike: max abs {error:.3g} (scale {scale:.3g})")
    expect(tally, error <= 1e-5 + 1e-3 * scale, f"{kind} same: logits of the loaded output vs PEFT's merged tensors: max abs {error:.3g}")
    # After a forward pass LLM.int8 moves SCB into its matmul state: its Q(W + ΔW) from the file.
    after = ({name: bnbf.int8_vectorwise_dequant(ours[name], ours[name.removesuffix("weight") + "SCB"]) for name in dequantized}
             if kind == "int8" else dequantized_weights(loaded))
    check_survival(kind, tally, work, pack, report, dequantized, after, read_all(work / kind), ours)


def check_survival(kind, tally, work, pack, report, before, after, base_stored, ours):
    """merge's survival figures recomputed from the same tensors: Q(W) bnb's dequantization of the
    base, Q(W + ΔW) of the output, ΔW = peftpack's fp32 merge (--dtype fp32) − Q(W), in fp64."""
    plain_folder = work / f"{kind}-fp32"
    run_peftpack("merge", "--base", str(work / kind), str(pack), "-o", str(plain_folder), "--dtype", "fp32")
    merged = read_all(plain_folder)
    figures = {entry["tensor"]: entry for entry in report.get("requantized") or []}
    expect(tally, set(figures) == {name for name in merged if name in before and not torch.equal(merged[name], before[name])},
           f"{kind} same: the report covers every merged quantized weight ({sorted(figures)[:2]}…)")
    worst = 0.0
    for name, entry in figures.items():
        delta = merged[name].double() - before[name].double()
        survived = after[name].double() - before[name].double()
        ratio = (survived.norm() / delta.norm()).item()
        cosine = (survived * delta).sum().item() / (survived.norm() * delta.norm()).item()
        unchanged = (codes_of(base_stored[name], name) == codes_of(ours[name], name)).double().mean().item()
        worst = max(worst, abs(ratio - entry["normRatio"]), abs(cosine - entry["cosine"]), abs(unchanged - entry["unchangedCodeShare"]))
        print(f"  {kind} same: {name}: norm ratio {ratio:.4f}, cosine {cosine:.4f}, codes unchanged {unchanged:.3f}")
    expect(tally, worst <= 1e-9, f"{kind} same: merge's survival figures equal the ones computed here (worst difference {worst:.2g})")


def round_bf16(values):
    """float64 → bfloat16 rounded once, to nearest with ties to even (torch's float64 → bfloat16
    cast goes through float32 and can round twice)."""
    mantissa, exponent = np.frexp(values)
    return torch.from_numpy(np.ldexp(np.rint(np.ldexp(mantissa, 8)), exponent - 8)).to(torch.bfloat16)


def check_promoted(name, tally, work, base_folder, pack, dequantized, deltas, dtype):
    """merge --dtype same --promote DTYPE with --min-survival between the 3rd and 4th lowest
    survival of the `same` merge, so half the merged weights are promoted, half stay quantized."""
    same_folder = work / f"{name}-same-for-promote"
    same_report = json.loads(run_peftpack("merge", "--base", str(base_folder), str(pack), "-o", str(same_folder), "--dtype", "same", "--json").stdout)
    same = read_all(same_folder)
    figures = sorted(entry["survival"] for entry in same_report["requantized"])
    threshold = (figures[2] + figures[3]) / 2
    flag = {torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
    folder = work / f"{name}-promoted"
    report = json.loads(run_peftpack("merge", "--base", str(base_folder), str(pack), "-o", str(folder), "--dtype", "same",
                                     "--promote", flag, "--min-survival", repr(threshold), "--json").stdout)
    label = {torch.bfloat16: "BF16", torch.float32: "F32"}[dtype]
    promoted = sorted(entry["tensor"] for entry in report["requantized"] if entry.get("promotedTo"))
    expected = sorted(entry["tensor"] for entry in same_report["requantized"] if entry["survival"] < threshold)
    expect(tally, promoted == expected and len(promoted) == 3 and {e.get("promotedTo") for e in report["requantized"]} == {label, None},
           f"{name} --promote {flag}: the report marks the weights below --min-survival promoted to {label} ({promoted})")
    ours = read_all(folder)
    modules = [weight.removesuffix(".weight") for weight in promoted]
    worst_ulps, ties = 0, 0
    for weight in promoted:
        exact = (dequantized[weight].double() + deltas[weight]).numpy()
        exact = round_bf16(exact) if dtype == torch.bfloat16 else torch.from_numpy(exact.astype(np.float32))
        actual = ours.get(weight)
        if actual is None or actual.dtype != dtype or actual.shape != exact.shape:
            expect(tally, False, f"{name} --promote {flag}: {weight} stored as {None if actual is None else (actual.dtype, tuple(actual.shape))}")
            continue
        bits = torch.int16 if dtype == torch.bfloat16 else torch.int32
        ulps = (actual.view(bits).long() - exact.view(bits).long()).abs()
        worst_ulps = max(worst_ulps, int(ulps.max()))
        ties += int((ulps > 0).sum())
    # 16-bit: 0 ulp (a tie at bf16 needs the fp64 sum within ~1e-16 of a midpoint); fp32 allows the
    # 1-ulp fp64 summation-order ties the plain merge check above counts.
    allowed = 0 if dtype == torch.bfloat16 else 1
    expect(tally, worst_ulps <= allowed,
           f"{name} --promote {flag}: promoted weights equal bnb's dequantization + ΔW (fp64) rounded once to {label} (worst {worst_ulps} ulp, {ties} elements off)")
    companions = tuple(m + ".weight." for m in modules)
    leftovers = [n for n in ours if n.startswith(companions)]
    expect(tally, not leftovers, f"{name} --promote {flag}: promoted weights have no quantization companions ({leftovers[:3]})")
    others = {n for n in same if not n.startswith(companions) and n not in promoted}
    differ = sorted(n for n in others if n not in ours or not torch.equal(ours[n].reshape(-1).view(torch.uint8), same[n].reshape(-1).view(torch.uint8)))
    expect(tally, set(ours) == others | set(promoted) and not differ,
           f"{name} --promote {flag}: every other tensor is the --dtype same output's, byte for byte ({differ[:3]})")
    skip = json.loads((folder / "config.json").read_text())["quantization_config"]["llm_int8_skip_modules"]
    expect(tally, skip == ["lm_head"] + modules,
           f"{name} --promote {flag}: config.json's llm_int8_skip_modules lists transformers' default (lm_head) and the promoted modules ({skip})")

    import bitsandbytes as bnb
    loaded = LlamaForCausalLM.from_pretrained(folder, device_map="cpu").eval()
    kinds = {n: type(m) for n, m in loaded.named_modules() if n.endswith(tuple(TARGETS)) or n == "lm_head"}
    wrong = [n for n, cls in kinds.items() if cls is not (torch.nn.Linear if n in modules or n == "lm_head" else bnb.nn.Linear4bit)]
    parameters = dict(loaded.named_parameters())
    expect(tally, not wrong and all(parameters[w].dtype == dtype for w in promoted),
           f"{name} --promote {flag}: transformers loads the promoted modules ({label}) and lm_head as nn.Linear, the others as Linear4bit ({wrong})")
    changed = [w for w in promoted if not torch.equal(parameters[w].detach(), ours[w])]
    expect(tally, not changed, f"{name} --promote {flag}: the loaded promoted weights are the stored ones ({changed})")

    # The same model built in torch from those weights: the plain Llama the base was quantized from
    # (loaded as transformers builds it in that dtype, rotary tables included), holding
    # the promoted weights, bnb's dequantization of the Linear4bit ones and every other tensor as
    # stored. Linear4bit on CPU dequantizes to the quant state's dtype and runs F.linear in the
    # compute dtype (the base's here), so the two run the same operations: equal logits are
    # expected, and the tolerance is verify's fp32 default (1e-5 + 1e-4 × scale) against kernel
    # order differences.
    plain = LlamaForCausalLM.from_pretrained(work / str(dtype).removeprefix("torch."), device_map="cpu").eval()
    state = {n: ours[n] for n in plain.state_dict() if n in ours}
    state.update({n: w.to(dtype) for n, w in dequantized_weights(loaded).items()})
    missing = sorted(set(plain.state_dict()) - set(state))
    plain.load_state_dict(state, strict=False)
    input_ids = torch.randint(0, 320, (2, 9), generator=torch.Generator().manual_seed(5))
    reference = logits(plain, input_ids).float()
    error = (logits(loaded, input_ids).float() - reference).abs().max().item()
    scale = reference.abs().max().item()
    print(f"  {name} --promote {flag}: logits of the loaded output vs the torch model on its weights: max abs {error:.3g} (scale {scale:.3g})")
    expect(tally, not missing and error <= 1e-5 + 1e-4 * scale,
           f"{name} --promote {flag}: logits of the loaded output vs a torch model on its weights: max abs {error:.3g} ({missing[:3]})")
    result = run_peftpack("verify", str(pack), "--base", str(base_folder), "--merged", str(folder), check=False)
    expect(tally, result.returncode == 0, f"{name} --promote {flag}: verify --merged on the output: {result.stdout.strip()}{result.stderr.strip()}")


def check_promotion(tally):
    """--promote on a bnb base: refused to a dtype other than the base's (transformers would load it
    as stored and fail on the mixed dtypes), checked on the fp32 NF4 base at fp32 and on a bf16 NF4
    base (QLoRA's usual setup) at bf16."""
    work = scratch_dir()
    dequantized, deltas = make_artifacts(work, "nf4")
    pack = work / "nf4.peftpack"
    run_peftpack("import", str(work / "nf4-lora"), "-o", str(pack), "--base", str(work / "nf4"))
    refused = run_peftpack("merge", "--base", str(work / "nf4"), str(pack), "-o", str(work / "refused"), "--dtype", "same",
                           "--promote", "bf16", check=False)
    expect(tally, refused.returncode == 2 and "F32" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
           and not (work / "refused").exists(),
           f"nf4 --promote bf16 on an F32 base: refused in one line, exit 2 ({refused.returncode}: {refused.stderr.strip()})")
    check_promoted("nf4", tally, work, work / "nf4", pack, dequantized, deltas, torch.float32)

    work = scratch_dir()
    dequantized, deltas = make_artifacts(work, "nf4", dtype=torch.bfloat16, quantization=NF4_BF16)
    pack = work / "nf4-bf16.peftpack"
    run_peftpack("import", str(work / "nf4-lora"), "-o", str(pack), "--base", str(work / "nf4"))
    check_promoted("nf4 bf16", tally, work, work / "nf4", pack, dequantized, deltas, torch.bfloat16)


def main():
    tally = Tally("quantized bases (bitsandbytes)")
    for kind in QUANTIZATIONS:
        check(kind, tally)
        check_same(kind, tally)
    check_promotion(tally)
    sys.exit(tally.finish())


if __name__ == "__main__":
    main()
