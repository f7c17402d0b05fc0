"""GGUF adapters written by `peftpack export --format gguf`, judged by the `gguf` package (the
reader llama.cpp's own Python tools use) and by PEFT: for every LoRA module, the ΔW llama.cpp
computes from the file — (adapter.lora.alpha / r) · B·A with r read from the tensor pair, and
the q/k rows put back from llama.cpp's rotary order for Llama — must equal the ΔW PEFT applies
(`get_delta_weight`), including rsLoRA with rank and alpha patterns and GPT-2's Conv1D layout.

With LLAMACPP_SRC set (scripts/llamacpp-source.sh), llama.cpp's own convert_lora_to_gguf.py converts
the same PEFT folders: on a plain LoRA its file and ours must give the same ΔW for every tensor;
on rsLoRA with rank/alpha patterns the script prints how far the converter's ΔW is from PEFT's.
The model families llama.cpp converts (fixtures/data/families, FAMILY_ARCHITECTURES) are checked
the same way on their rsLoRA case, with the architecture name convert_hf_to_gguf.py gives them;
since the converter ignores rsLoRA and the patterns, there each of its ΔW must be a multiple of ours
(same tensor names and row order, 1e-6 relative), the scale being the part it gets wrong.

Runs in .venv/peft (gguf pinned in fixtures/requirements.txt). Tolerance: 1e-6 relative to the
largest |ΔW| (fp32 factors; folding the scale into B rounds once per element); q8_0 files get
1e-2 (8-bit quantization of each factor)."""
import sys

import numpy as np
import torch
from gguf import GGUFReader
from peft import PeftModel

from common import CASES, FIXTURES, MODELS, Tally, load_base, reference, run_peftpack, scratch_dir

CASES_TO_CHECK = {
    "llama_lora": "f32",
    "llama_rslora_patterns": "f32",
    "gpt2_lora_fan_in_fan_out": "f32",
    "llama_lora_q8": "q8_0",
}
FAMILIES = FIXTURES / "families"
# The family fixtures llama.cpp supports, with the general.architecture its convert_hf_to_gguf.py
# writes for them (conversion/llama.py registers MistralForCausalLM; conversion/qwen.py Qwen3).
HEAD_CASES = FIXTURES / "gguf_head" / "cases"
FAMILY_ARCHITECTURES = {"gemma": "gemma", "mistral": "llama", "qwen3": "qwen3", "gemma2": "gemma2", "gemma3": "gemma3", "phi3": "phi3"}


def unpermute(rows, heads):
    """Inverse of convert_hf_to_gguf.py's LlamaModel.permute on the rows of B."""
    out_features, rank = rows.shape
    return rows.reshape(heads, out_features // heads // 2, 2, rank).swapaxes(1, 2).reshape(out_features, rank)


def gguf_name(module, architecture):
    if module == "lm_head":
        return "output.weight"
    parts = module.split(".")
    if architecture == "gpt2":
        layer, suffix = parts[2], ".".join(parts[3:])
        mapped = {"attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}[suffix]
    else:
        layer, suffix = parts[2], ".".join(parts[3:])
        mapped = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                  "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                  "mlp.down_proj": "ffn_down", "self_attn.qkv_proj": "attn_qkv", "mlp.gate_up_proj": "ffn_up"}[suffix]
    return f"blk.{layer}.{mapped}.weight"


def read_deltas(path):
    """{gguf weight name: (alpha / r) · B·A} as llama.cpp computes it, in the file's row order."""
    from gguf import dequantize
    reader = GGUFReader(str(path))
    fields = {field.name: field for field in reader.fields.values()}
    alpha = float(fields["adapter.lora.alpha"].parts[fields["adapter.lora.alpha"].data[0]][0])
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    def values(tensor):
        array = dequantize(tensor.data, tensor.tensor_type)
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).double().reshape(tuple(reversed([int(d) for d in tensor.shape])))
    out = {}
    for name in tensors:
        if name.endswith(".lora_a"):
            key = name[: -len(".lora_a")]
            a, b = values(tensors[name]), values(tensors[key + ".lora_b"])
            out[key] = ((alpha / a.shape[0]) if alpha else 1.0) * (b @ a)
    return out


def converted_deltas(case, work, source, root=CASES, base=MODELS / "llama-tiny"):
    """(llama.cpp's converter's ΔW, peftpack's ΔW) for one PEFT folder, by GGUF tensor name."""
    import os
    import subprocess
    converted = work / f"{case}.llamacpp.gguf"
    subprocess.run([sys.executable, os.path.join(source, "convert_lora_to_gguf.py"), str(root / case / "adapter"),
                    "--base", str(base), "--outtype", "f32", "--outfile", str(converted)],
                   check=True, capture_output=True, env={**os.environ, "PYTHONPATH": os.path.join(source, "gguf-py")})
    pack, ours = work / f"{case}.cmp.peftpack", work / f"{case}.cmp.gguf"
    run_peftpack("import", str(root / case / "adapter"), "-o", str(pack), "--base", str(base))
    run_peftpack("export", str(pack), "-o", str(ours), "--format", "gguf")
    theirs, mine = read_deltas(converted), read_deltas(ours)
    if set(theirs) != set(mine):
        raise AssertionError(f"tensor names differ: {sorted(set(theirs) ^ set(mine))[:4]}")
    return theirs, mine


def compare_with_converter(case, work, source):
    theirs, mine = converted_deltas(case, work, source)
    worst = max(((theirs[k] - mine[k]).abs().max() / mine[k].abs().max()).item() for k in mine)
    return worst


def check_family_converter(family, work, source):
    """Same names and row order as llama.cpp's converter: each of its ΔW is c·ours for one c."""
    theirs, mine = converted_deltas(f"{family}_lora", work, source, FAMILIES / family / "cases",
                                    FAMILIES / family / "model")
    for key in mine:
        scale = (theirs[key] * mine[key]).sum() / (mine[key] * mine[key]).sum()
        residual = ((theirs[key] - scale * mine[key]).abs().max() / theirs[key].abs().max()).item()
        if not residual <= 1e-6:
            raise AssertionError(f"{key}: llama.cpp's converter's ΔW is no multiple of ours ({residual:.3g} relative)")


def check(name, dtype, work, root=CASES, expected_architecture=None):
    case = name.removesuffix("_q8")
    _, metadata = reference(case, root)
    pack, exported = work / f"{name}.peftpack", work / f"{name}.gguf"
    run_peftpack("import", str(root / case / "adapter"), "-o", str(pack), "--base", str(FIXTURES / metadata["base"]))
    run_peftpack("export", str(pack), "-o", str(exported), "--format", "gguf", "--dtype", dtype)
    reader = GGUFReader(str(exported))
    fields = {field.name: field for field in reader.fields.values()}
    def text(key):
        field = fields[key]
        return bytes(field.parts[field.data[0]]).decode()
    assert text("general.type") == "adapter" and text("adapter.type") == "lora", "not a LoRA adapter file"
    architecture = text("general.architecture")
    if expected_architecture and architecture != expected_architecture:
        raise AssertionError(f"general.architecture {architecture}, llama.cpp's converter writes {expected_architecture}")
    alpha = float(fields["adapter.lora.alpha"].parts[fields["adapter.lora.alpha"].data[0]][0])
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    def values(tensor):
        from gguf import dequantize
        array = dequantize(tensor.data, tensor.tensor_type)
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).double().reshape(tuple(reversed([int(d) for d in tensor.shape])))
    model = PeftModel.from_pretrained(load_base(metadata), str(root / case / "adapter")).eval()
    config = model.base_model.model.config
    checked = 0
    for module_name, module in model.base_model.model.named_modules():
        if not hasattr(module, "lora_A") or "default" not in module.lora_A:
            continue
        expected = module.get_delta_weight("default").double()
        if getattr(module, "fan_in_fan_out", False):
            expected = expected.T  # get_delta_weight returns the stored (Conv1D) orientation
        key = gguf_name(module_name, architecture)
        a, b = values(tensors[key + ".lora_a"]), values(tensors[key + ".lora_b"])
        if architecture == "llama" and (key.endswith("attn_q.weight") or key.endswith("attn_k.weight")):
            heads = config.num_attention_heads if key.endswith("attn_q.weight") else config.num_key_value_heads
            b = unpermute(b, heads)
        rank = a.shape[0]
        actual = (alpha / rank) * (b @ a)
        tolerance = (1e-2 if dtype == "q8_0" else 1e-6) * expected.abs().max().item()
        error = (actual - expected).abs().max().item()
        if not error <= tolerance:
            raise AssertionError(f"{module_name}: llama.cpp's ΔW from the GGUF is {error:.3g} off (tolerance {tolerance:.3g})")
        checked += 1
    if checked == 0 or checked * 2 != len(tensors):
        raise AssertionError(f"checked {checked} modules against {len(tensors)} GGUF tensors")


def main() -> int:
    import os
    work = scratch_dir()
    tally = Tally("gguf exports match PEFT's ΔW")
    for name, dtype in CASES_TO_CHECK.items():
        tally.check(name, lambda name=name, dtype=dtype: check(name, dtype, work))
    tally.check("llama_lora_head (LoRA on the untied lm_head)", lambda: check("llama_lora_head", "f32", work, HEAD_CASES))
    for family, architecture in FAMILY_ARCHITECTURES.items():
        tally.check(f"{family}_lora ({architecture})", lambda f=family, a=architecture: check(
            f"{f}_lora", "f32", work, FAMILIES / f / "cases", a))
    source = os.environ.get("LLAMACPP_SRC")
    if source:
        def plain():
            worst = compare_with_converter("llama_lora", work, source)
            if not worst <= 1e-6:
                raise AssertionError(f"llama.cpp's converter and peftpack differ by {worst:.3g} (relative) on a plain LoRA")
        tally.check("plain LoRA: same ΔW as llama.cpp's convert_lora_to_gguf.py", plain)
        worst = compare_with_converter("llama_rslora_patterns", work, source)
        print(f"info: on rsLoRA with rank/alpha patterns, llama.cpp's converter's ΔW is off by up to {worst:.1%} of the module's largest |ΔW| (peftpack's matches PEFT, above)", flush=True)
        def untied_head():
            theirs, mine = converted_deltas("llama_lora_head", work, source, HEAD_CASES)
            worst = max(((theirs[k] - mine[k]).abs().max() / mine[k].abs().max()).item() for k in mine)
            if "output.weight" not in mine or not worst <= 1e-6:
                raise AssertionError(f"lm_head LoRA: names {sorted(mine)[:3]}…, llama.cpp's converter differs by {worst:.3g}")
        tally.check("LoRA on an untied lm_head: same ΔW as llama.cpp's converter (which drops lm_head.base_layer.weight)", untied_head)
        for family in FAMILY_ARCHITECTURES:
            tally.check(f"{family}_lora: llama.cpp's converter gives the same names and row order",
                        lambda f=family: check_family_converter(f, work, source))
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
