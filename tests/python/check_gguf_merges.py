"""`peftpack merge` into GGUF bases, judged by the `gguf` package (the reader llama.cpp's Python
tools and transformers use), PEFT and transformers:

- gguf-py's GGUFReader reads every output: the base's metadata fields with equal contents, the
  base's tensors in its order and shapes, untouched tensors with the base's bytes;
- each merged tensor is the base's dequantized weight plus PEFT's own ΔW (`get_delta_weight`, on a
  model built in float64 from the dequantized base, q/k rows put in transformers' order and back),
  written as merge promises: default F16 (a quantized base) rounded once from float64 by numpy;
  `--dtype same` gguf.quants.quantize of the float32 merge (Q5_0, Q8_0), the K-quant base checked
  by value only here (gguf 0.19 cannot quantize K-quants; GGUFMergeTests hold its bytes to ggml's
  reference quantizer) — every Q4_K/Q5_K/Q6_K element within one quantization step of the merge;
- transformers loads the default output of the K-quant base (`from_pretrained(gguf_file=…)`, which
  dequantizes with gguf-py), and its logits equal those of the PEFT model on the dequantized base
  within what rounding the merged weights to F16 moves them (the bound is measured: the PEFT model
  with those weights rounded to F16 in torch, 1e-5 relative for summation order);
- the survival report's figures equal numpy's from the same tensors (1e-9 relative).

Runs in .venv/peft."""
import json
import sys
from pathlib import Path

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader
from peft import PeftModel
from transformers import LlamaConfig, LlamaForCausalLM

from common import CASES, FIXTURES, Tally, run_peftpack, scratch_dir

BASES = FIXTURES / "gguf_base"
LAYERS = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
          "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
          "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def shape_of(tensor):
    return [int(n) for n in reversed(tensor.shape)]


def dequantized(tensor):
    return gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type).astype(np.float32).reshape(shape_of(tensor))


def permute(weights, heads, inverse=False):
    rows = weights.shape[0]
    if inverse:
        return weights.reshape(heads, rows // heads // 2, 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)
    return weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def field_values(reader):
    return {field.name: field.contents() for field in reader.fields.values() if not field.name.startswith("GGUF.")}


def config_of(reader):
    values = field_values(reader)
    embedding = next(t for t in reader.tensors if t.name == "token_embd.weight")
    return LlamaConfig(vocab_size=shape_of(embedding)[0], hidden_size=values["llama.embedding_length"],
                       intermediate_size=values["llama.feed_forward_length"], num_hidden_layers=values["llama.block_count"],
                       num_attention_heads=values["llama.attention.head_count"],
                       num_key_value_heads=values["llama.attention.head_count_kv"],
                       head_dim=values.get("llama.attention.key_length", values["llama.embedding_length"] // values["llama.attention.head_count"]),
                       rms_norm_eps=values["llama.attention.layer_norm_rms_epsilon"], rope_theta=values.get("llama.rope.freq_base", 10000.0),
                       max_position_embeddings=values.get("llama.context_length", 64),
                       tie_word_embeddings=not any(t.name == "output.weight" for t in reader.tensors))


def checkpoint_name(gguf_name):
    base, suffix = gguf_name.rsplit(".", 1)
    parts = base.split(".")
    if parts[0] == "blk":
        return f"model.layers.{parts[1]}.{LAYERS[parts[2]]}.{suffix}"
    return f"{TOP[base]}.{suffix}"


def heads_of(gguf_name, config):
    part = gguf_name.split(".")[2] if gguf_name.startswith("blk.") else ""
    return {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads}.get(part)


def peft_model(reader, adapter, dtype):
    """The PEFT model on the base's dequantized weights (transformers' row order), in `dtype`."""
    config = config_of(reader)
    model = LlamaForCausalLM(config).to(dtype).eval()
    state = {}
    for tensor in reader.tensors:
        values = dequantized(tensor)
        if heads := heads_of(tensor.name, config):
            values = permute(values, heads, inverse=True)
        state[checkpoint_name(tensor.name)] = torch.from_numpy(np.ascontiguousarray(values)).to(dtype)
    model.load_state_dict(state, strict=not config.tie_word_embeddings)
    return PeftModel.from_pretrained(model, str(adapter)).to(dtype).eval(), config


def exact_merges(reader, adapter):
    """{gguf tensor name: float64 W + ΔW in the file's row order} with ΔW from PEFT."""
    model, config = peft_model(reader, adapter, torch.float64)
    base = {t.name: t for t in reader.tensors}
    merges = {}
    for name, module in model.base_model.model.named_modules():
        if not hasattr(module, "lora_A") or "default" not in module.lora_A:
            continue
        parts = name.split(".")
        llama = {v: k for k, v in LAYERS.items()}[".".join(parts[3:])]
        key = f"blk.{parts[2]}.{llama}.weight"
        delta = module.get_delta_weight("default").detach().numpy()
        heads = heads_of(key, config)
        if heads:
            delta = permute(delta, heads)
        merges[key] = dequantized(base[key]).astype(np.float64) + delta
    return merges


def check_file(base_path, out_path, merges, expected_bytes):
    base, out = GGUFReader(str(base_path)), GGUFReader(str(out_path))
    if field_values(base).keys() != field_values(out).keys():
        raise AssertionError(f"metadata keys differ: {sorted(set(field_values(base)) ^ set(field_values(out)))[:4]}")
    for key, value in field_values(base).items():
        if key != "split.count" and field_values(out)[key] != value:
            raise AssertionError(f"metadata {key} differs")
    if [t.name for t in base.tensors] != [t.name for t in out.tensors]:
        raise AssertionError("tensor list differs")
    outputs = {t.name: t for t in out.tensors}
    for tensor in base.tensors:
        written = outputs[tensor.name]
        if shape_of(written) != shape_of(tensor):
            raise AssertionError(f"{tensor.name}: shape {shape_of(written)}, base {shape_of(tensor)}")
        data = bytes(np.asarray(written.data).tobytes())
        if tensor.name not in merges:
            if data != bytes(np.asarray(tensor.data).tobytes()):
                raise AssertionError(f"{tensor.name}: untouched but its bytes differ from the base's")
            continue
        want_type, want = expected_bytes(tensor, merges[tensor.name])
        if written.tensor_type != want_type:
            raise AssertionError(f"{tensor.name}: written as {written.tensor_type.name}, expected {want_type.name}")
        if want is not None and data != want:
            differing = np.count_nonzero(np.frombuffer(data, np.uint8) != np.frombuffer(want, np.uint8))
            raise AssertionError(f"{tensor.name}: {differing} bytes differ from the expected {want_type.name} encoding")
        if want is None:
            # K-quants: within one step of the merge (a block's largest |value| / 15 bounds Q4_K's).
            error = np.abs(dequantized(written).astype(np.float64) - merges[tensor.name])
            step = np.abs(merges[tensor.name]).reshape(-1, 32).max(axis=1).repeat(32).reshape(error.shape) / 7
            if not (error <= step).all():
                raise AssertionError(f"{tensor.name}: {np.count_nonzero(error > step)} values more than a step from the merge")


def f16_expected(tensor, merged):
    if tensor.tensor_type in (T.F32, T.BF16):
        raise AssertionError("fixture bases used here are quantized or F16")
    return T.F16, merged.astype(np.float16).tobytes()


def same_expected(tensor, merged):
    if tensor.tensor_type in (T.Q4_K, T.Q5_K, T.Q6_K):
        return tensor.tensor_type, None
    return tensor.tensor_type, np.asarray(gguf.quants.quantize(merged.astype(np.float32), tensor.tensor_type)).tobytes()


def merge(work, base_path, adapter, label, *options):
    pack = work / f"{label}.peftpack"
    if not pack.exists():
        run_peftpack("import", str(adapter), "-o", str(pack), "--base", str(base_path))
    out = work / f"{label}{'-'.join(('',) + options).replace('--', '')}.gguf"
    result = run_peftpack("merge", "--base", str(base_path), str(pack), "-o", str(out), "--json", "--skip-base-check", *options)
    return out, json.loads(result.stdout)


def check_survival(report, base_path, out_path, merges):
    base, out = ({t.name: t for t in GGUFReader(str(p)).tensors} for p in (base_path, out_path))
    model_names = {checkpoint_name(name): name for name in merges}
    for entry in report["requantized"]:
        name = model_names[entry["tensor"]]
        before, after = dequantized(base[name]).astype(np.float64), dequantized(out[name]).astype(np.float64)
        merged = merges[name].astype(np.float32).astype(np.float64)
        delta, kept = merged - before, after - before
        figures = {"normRatio": np.sqrt((kept ** 2).sum() / (delta ** 2).sum()),
                   "cosine": (kept * delta).sum() / np.sqrt((kept ** 2).sum() * (delta ** 2).sum()),
                   "survival": (kept * delta).sum() / (delta ** 2).sum(),
                   "unchangedCodeShare": np.mean(before.astype(np.float32) == after.astype(np.float32))}
        for key, value in figures.items():
            if not abs(entry[key] - value) <= 1e-9 * max(abs(value), 1e-12):
                raise AssertionError(f"{entry['tensor']}: {key} {entry[key]} but numpy gives {value}")


def transformers_loads(work, base_path, adapter):
    out, _ = merge(work, base_path, adapter, "k-transformers")
    reader = GGUFReader(str(base_path))
    ids = torch.tensor([[1, 5, 9, 200, 17, 3, 99, 42]])
    merged = LlamaForCausalLM.from_pretrained(str(out.parent), gguf_file=out.name, dtype=torch.float32).eval()
    peft, config = peft_model(reader, adapter, torch.float32)
    with torch.no_grad():
        theirs = merged(input_ids=ids).logits
        exact = peft(input_ids=ids).logits
        rounded = peft.merge_and_unload()
        for module in rounded.modules():
            if isinstance(module, torch.nn.Linear) and module.weight.shape[0] != config.vocab_size:
                module.weight.copy_(module.weight.to(torch.float16).to(torch.float32))
        bound = (rounded(input_ids=ids).logits - exact).abs().max().item()
    error = (theirs - exact).abs().max().item()
    slack = 1e-5 * exact.abs().max().item()
    if not error <= 4 * bound + slack:
        raise AssertionError(f"transformers on the merged GGUF: {error:.3g} from PEFT on the base, a correct F16 merge reaches {bound:.3g}")
    print(f"info: transformers on the merged Q4_K_M-style GGUF: logits {error:.3g} from PEFT's, an F16 rounding of the merge moves them {bound:.3g}", flush=True)


def main() -> int:
    work = scratch_dir()
    tally = Tally("GGUF merges read by gguf-py, equal to PEFT's ΔW on the dequantized base")
    lora = CASES / "llama_lora" / "adapter"
    k_lora = FIXTURES / "gguf_merge" / "k_lora"
    cases = [("q5_0", BASES / "llama-tiny-q5_0.gguf", lora), ("q8_0", BASES / "llama-tiny-q8_0.gguf", lora),
             ("k", BASES / "llama-k-quants.gguf", k_lora)]
    for label, path, adapter in cases:
        merges = exact_merges(GGUFReader(str(path)), adapter)

        def default(label=label, path=path, adapter=adapter, merges=merges):
            out, report = merge(work, path, adapter, label)
            check_file(path, out, merges, f16_expected)
            if report.get("requantized") is not None:
                raise AssertionError("a default merge reports requantization")

        def same(label=label, path=path, adapter=adapter, merges=merges):
            out, report = merge(work, path, adapter, label, "--dtype", "same")
            check_file(path, out, merges, same_expected)
            check_survival(report, path, out, merges)

        tally.check(f"{label}: default merge is F16 of the exact merge, untouched tensors and metadata byte for byte", default)
        tally.check(f"{label}: --dtype same requantizes the exact merge, survival figures as numpy computes them", same)
    tally.check("transformers loads the default merge of the K-quant base; its logits are PEFT's within the F16 rounding",
                lambda: transformers_loads(work, BASES / "llama-k-quants.gguf", k_lora))
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
