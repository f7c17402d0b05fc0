"""Writes a benchmark workload at scale without holding the model in memory (issue 18):

    .venv/peft/bin/python Benchmarks/workload.py SIZE [--work DIR]     SIZE: 0.5b, 2b or 8b

into DIR/SIZE (default /work/bench/SIZE; Benchmarks/scale.sh passes BENCH_WORK). Never used by
tests or CI: the 8B workload is 16 GB of base plus a fine-tune.

- base/: a LlamaForCausalLM-shaped bf16 checkpoint (config.json written by transformers'
  LlamaConfig; 8b is Llama-3.1-8B's shape: hidden 4096, 32 layers, intermediate 14336, 32 heads over
  8 key/value heads, vocab 128256, rope_theta 500000, untied head) in shards of at most 4 GB with
  model.safetensors.index.json, named as transformers names them. Every tensor is drawn from its own
  seed (crc32 of its name), normal with std 0.02 (norm weights 1 + 0.02 N), generated and written in
  chunks of 16 Mi elements, rounded to bf16 with round-to-nearest-even.
- lora/: a rank-16, alpha-32 PEFT LoRA on every linear layer (q, k, v, o, gate, up, down), config
  written by peft's LoraConfig, factors fp32 with std 0.02 (A) and 0.002 (B), so the merge changes
  every targeted weight by about the size of a bf16 step.
- lora-perturbed/: the same LoRA with layer 2's v_proj B multiplied by 3 (verify's negative control:
  a merge made from it must fail against the original adapter).
- finetuned/: the base with layers 0 and 1's seven projections changed by a rank-8 product plus a
  dense perturbation of std 1e-4 (the merge-and-extract use case); shards the change leaves alone are
  hard links to the base's, so the fine-tune costs only the shards it touches.
- READY: written last.
"""

import argparse
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np

SIZES = {
    "0.5b": dict(hidden=896, layers=24, intermediate=4864, heads=14, kv_heads=2, vocab=151936),
    "2b": dict(hidden=2048, layers=32, intermediate=8192, heads=32, kv_heads=8, vocab=128256),
    "8b": dict(hidden=4096, layers=32, intermediate=14336, heads=32, kv_heads=8, vocab=128256),
}
SHARD_BYTES = 4 * 10**9
CHUNK = 16 << 20
PROJECTIONS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
RANK, ALPHA = 16, 32
FINETUNED_LAYERS = (0, 1)


def tensor_shapes(s):
    head_dim = s["hidden"] // s["heads"]
    shapes = {"model.embed_tokens.weight": [s["vocab"], s["hidden"]]}
    for layer in range(s["layers"]):
        p = f"model.layers.{layer}."
        shapes[p + "input_layernorm.weight"] = [s["hidden"]]
        shapes[p + "self_attn.q_proj.weight"] = [s["heads"] * head_dim, s["hidden"]]
        shapes[p + "self_attn.k_proj.weight"] = [s["kv_heads"] * head_dim, s["hidden"]]
        shapes[p + "self_attn.v_proj.weight"] = [s["kv_heads"] * head_dim, s["hidden"]]
        shapes[p + "self_attn.o_proj.weight"] = [s["hidden"], s["heads"] * head_dim]
        shapes[p + "post_attention_layernorm.weight"] = [s["hidden"]]
        shapes[p + "mlp.gate_proj.weight"] = [s["intermediate"], s["hidden"]]
        shapes[p + "mlp.up_proj.weight"] = [s["intermediate"], s["hidden"]]
        shapes[p + "mlp.down_proj.weight"] = [s["hidden"], s["intermediate"]]
    shapes["model.norm.weight"] = [s["hidden"]]
    shapes["lm_head.weight"] = [s["vocab"], s["hidden"]]
    return shapes


def count(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def to_bf16(values):
    """float32 → bf16 bits, round to nearest even (no NaN arises from normal draws)."""
    bits = values.view(np.uint32)
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
    return (rounded >> np.uint32(16)).astype(np.uint16)


def chunks(name, shape, perturbation=None):
    """The tensor's bf16 bytes, CHUNK elements at a time (rows at a time for a perturbation)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    total = count(shape)
    norm = len(shape) == 1
    columns = shape[-1]
    rows_per_chunk = max(1, CHUNK // columns)
    row = 0
    while row * columns < total:
        rows = min(rows_per_chunk, total // columns - row) if not norm else 1
        n = rows * columns if not norm else total
        values = rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)
        if norm:
            values += np.float32(1)
        if perturbation is not None:
            values += perturbation(row, rows).reshape(-1)
        yield to_bf16(values).tobytes()
        row += rows
        if norm:
            break


def plan_shards(shapes):
    shards, current, size = [], [], 0
    for name, shape in shapes.items():
        nbytes = 2 * count(shape)
        if current and size + nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    shards.append(current)
    return shards


def write_shard(path, names, shapes, perturbations):
    header, offset = {}, 0
    for name in names:
        nbytes = 2 * count(shapes[name])
        header[name] = {"dtype": "BF16", "shape": shapes[name], "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    temporary = path.with_suffix(".partial")
    with open(temporary, "wb") as out:
        out.write(struct.pack("<Q", len(text)) + text)
        for name in names:
            for block in chunks(name, shapes[name], perturbations.get(name)):
                out.write(block)
    temporary.rename(path)
    return offset


def write_checkpoint(folder, shapes, shards, config, perturbations=None, link_from=None):
    perturbations = perturbations or {}
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    weight_map, total = {}, 0
    for index, names in enumerate(shards):
        file = f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors"
        path = folder / file
        touched = any(name in perturbations for name in names)
        if link_from is not None and not touched:
            if not path.exists():
                os.link(link_from / file, path)
            total += sum(2 * count(shapes[n]) for n in names)
        elif not path.exists():
            total += write_shard(path, names, shapes, perturbations)
            print(f"{folder.name}: wrote {file}", flush=True)
        else:
            total += sum(2 * count(shapes[n]) for n in names)
        weight_map.update({name: file for name in names})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def finetune_perturbations(shapes):
    """Rank-8 product plus dense noise on the chosen layers' projections, row ranges on demand."""
    perturbations = {}
    for layer in FINETUNED_LAYERS:
        for projection in PROJECTIONS:
            name = f"model.layers.{layer}.{projection}.weight"
            out_features, in_features = shapes[name]
            rng = np.random.default_rng(zlib.crc32(("ft:" + name).encode()))
            left = rng.standard_normal((out_features, 8), dtype=np.float32) * np.float32(0.01)
            right = rng.standard_normal((8, in_features), dtype=np.float32) * np.float32(0.01)
            def perturbation(row, rows, left=left, right=right, name=name, columns=in_features):
                noise = np.random.default_rng(zlib.crc32(f"noise:{name}:{row}".encode()))
                dense = noise.standard_normal((rows, columns), dtype=np.float32) * np.float32(1e-4)
                return left[row:row + rows] @ right + dense
            perturbations[name] = perturbation
    return perturbations


def write_lora(folder, shapes, base_folder, perturbed):
    from peft import LoraConfig
    from safetensors.numpy import save_file
    folder.mkdir(parents=True, exist_ok=True)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=[p.split(".")[1] for p in PROJECTIONS],
                        task_type="CAUSAL_LM", base_model_name_or_path=str(base_folder))
    config.save_pretrained(folder)
    tensors = {}
    for name, shape in shapes.items():
        if not any(name.endswith(p + ".weight") for p in PROJECTIONS):
            continue
        module = name[: -len(".weight")]
        rng = np.random.default_rng(zlib.crc32(("lora:" + module).encode()))
        a = rng.standard_normal((RANK, shape[1]), dtype=np.float32) * np.float32(0.02)
        b = rng.standard_normal((shape[0], RANK), dtype=np.float32) * np.float32(0.002)
        if perturbed and module == "model.layers.2.self_attn.v_proj":
            b *= np.float32(3)
        tensors[f"base_model.model.{module}.lora_A.weight"] = a
        tensors[f"base_model.model.{module}.lora_B.weight"] = b
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", choices=sorted(SIZES))
    parser.add_argument("--work", default=os.environ.get("BENCH_WORK", "/work/bench"))
    args = parser.parse_args()
    from transformers import LlamaConfig
    s = SIZES[args.size]
    root = Path(args.work) / args.size
    config = LlamaConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["intermediate"],
                         num_hidden_layers=s["layers"], num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"],
                         max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 500000.0}, dtype="bfloat16")
    shapes = tensor_shapes(s)
    shards = plan_shards(shapes)
    parameters = sum(count(shape) for shape in shapes.values())
    print(f"{args.size}: {parameters / 1e9:.2f}B parameters, {2 * parameters / 1e9:.1f} GB in {len(shards)} shards", flush=True)
    write_checkpoint(root / "base", shapes, shards, config)
    write_checkpoint(root / "finetuned", shapes, shards, config, finetune_perturbations(shapes), link_from=root / "base")
    write_lora(root / "lora", shapes, root / "base", perturbed=False)
    write_lora(root / "lora-perturbed", shapes, root / "base", perturbed=True)
    (root / "READY").write_text(json.dumps({"size": args.size, "parameters": parameters, "shards": len(shards)}) + "\n")


if __name__ == "__main__":
    main()
