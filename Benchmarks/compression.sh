#!/usr/bin/env bash
# Compression side by side, one run, on real PEFT LoRA adapters (fp32 as saved, and cast to bf16):
# the pack against zstd -19 of the raw safetensors file and against byte-grouped zstd -19 (the
# ZipNN method), with the order-0 entropy of the byte planes as the floor; then pack/unpack
# throughput on 1 GiB of bf16 weights.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/python-envs.sh >/dev/null
swift build -c release --static-swift-stdlib --product peftpack-bench >/dev/null
bench="$(swift build -c release --show-bin-path)/peftpack-bench"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python=.venv/peft/bin/python
"$python" - "$work" <<'PY'
import sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
work = sys.argv[1]
torch.manual_seed(0)
config = LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
                     num_key_value_heads=4, vocab_size=1000)
model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=16, lora_alpha=32, init_lora_weights=False,
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
model.save_pretrained(f"{work}/lora_fp32")
state = {k: v.to(torch.bfloat16).contiguous() for k, v in
         __import__("safetensors.torch", fromlist=["load_file"]).load_file(f"{work}/lora_fp32/adapter_model.safetensors").items()}
save_file(state, f"{work}/lora_bf16.safetensors", metadata={"format": "pt"})
PY
"$bench" pack "$work/lora_fp32/adapter_model.safetensors" "$work/fp32.peftpack" > "$work/pack-fp32.json"
"$bench" pack "$work/lora_bf16.safetensors" "$work/bf16.peftpack" > "$work/pack-bf16.json"
BENCH_LEVEL=19 "$bench" pack "$work/lora_fp32/adapter_model.safetensors" "$work/fp32-19.peftpack" > "$work/pack-fp32-19.json"
BENCH_LEVEL=19 "$bench" pack "$work/lora_bf16.safetensors" "$work/bf16-19.peftpack" > "$work/pack-bf16-19.json"
"$python" - "$work" <<'PY'
import json, sys, numpy as np, zstandard
from safetensors import safe_open
work = sys.argv[1]
def planes_of(path):
    out = []
    with safe_open(path, "np") as f:
        for name in f.keys():
            t = f.get_slice(name)
    import struct
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    for name, entry in header.items():
        if name == "__metadata__": continue
        b, e = entry["data_offsets"]
        raw = np.frombuffer(data[8 + n + b: 8 + n + e], dtype=np.uint8)
        width = {"F32": 4, "BF16": 2}[entry["dtype"]]
        out.append((entry["dtype"], raw.reshape(-1, width)))
    return out
def entropy_bytes(plane):
    counts = np.bincount(plane, minlength=256).astype(np.float64)
    p = counts[counts > 0] / plane.size
    return float(-(p * np.log2(p)).sum()) * plane.size / 8
def exponent_planes(dtype, matrix):
    x = matrix.copy().view(np.uint16 if dtype == "BF16" else np.uint32).ravel()
    if dtype == "BF16":
        return [((x >> 7) & 0xFF).astype(np.uint8), (((x >> 8) & 0x80) | (x & 0x7F)).astype(np.uint8)]
    return [((x >> 23) & 0xFF).astype(np.uint8), (((x >> 24) & 0x80) | ((x >> 16) & 0x7F)).astype(np.uint8),
            ((x >> 8) & 0xFF).astype(np.uint8), (x & 0xFF).astype(np.uint8)]
rows = []
for label, path, ours, ours19 in [("fp32 LoRA", f"{work}/lora_fp32/adapter_model.safetensors", "pack-fp32.json", "pack-fp32-19.json"),
                                   ("bf16 LoRA", f"{work}/lora_bf16.safetensors", "pack-bf16.json", "pack-bf16-19.json")]:
    data = open(path, "rb").read()
    raw = len(data)
    zstd19 = len(zstandard.ZstdCompressor(level=19).compress(data))
    grouped = floor = 0
    for dtype, matrix in planes_of(path):
        for k in range(matrix.shape[1]):
            grouped += len(zstandard.ZstdCompressor(level=19).compress(np.ascontiguousarray(matrix[:, k]).tobytes()))
        for plane in exponent_planes(dtype, matrix):
            floor += min(entropy_bytes(plane), plane.size)
    pack = json.load(open(f"{work}/{ours}"))
    pack19 = json.load(open(f"{work}/{ours19}"))
    rows.append((label, raw, zstd19 / raw, grouped / raw, pack["stored"] / raw, pack19["stored"] / raw, floor / raw,
                 pack["gb_per_s"]))
print("compressed / raw (smaller is better); raw = the adapter's safetensors file; one run")
print("| adapter | raw MB | zstd -19 | byte-grouped zstd -19 (ZipNN method) | pack (level 3) | pack (level 19) | order-0 plane entropy floor | pack level 3 vs floor |")
print("|---|---|---|---|---|---|---|---|")
for label, raw, z, g, p, p19, f, speed in rows:
    print(f"| {label} | {raw/1e6:.1f} | {z:.3f} | {g:.3f} | {p:.3f} | {p19:.3f} | {f:.3f} | {p/f:.3f}× |")
PY
"$python" - "$work/big.safetensors" <<'PY'
import sys, torch
from safetensors.torch import save_file
generator = torch.Generator().manual_seed(0)
save_file({f"layers.{i}.weight": (torch.randn(2048, 4096, generator=generator) * 0.02).to(torch.bfloat16)
           for i in range(64)}, sys.argv[1])
PY
"$bench" pack "$work/big.safetensors" "$work/big.peftpack" > "$work/pack-big.json"
"$bench" unpack "$work/big.peftpack" > "$work/unpack-big.json"
# inspect reads the preamble and header only. Timed twice: in this process (the header path alone,
# best of 20) and as whole processes (min and median of 30 runs), beside a bare `--version` (the
# process start every command pays) and /bin/true (the timing harness's own spawn cost).
peftpack="$(swift build -c release --show-bin-path)/peftpack"
swift build -c release --static-swift-stdlib --product peftpack >/dev/null
BENCH_RUNS=20 "$bench" open "$work/big.peftpack" > "$work/open-big.json"
"$python" - "$peftpack" "$work/big.peftpack" > "$work/inspect.json" <<'PY'
import json, statistics, subprocess, sys, time
def timed(command, runs=30):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return {"min": min(times), "median": statistics.median(times)}
print(json.dumps({"true": timed(["/bin/true"]), "version": timed([sys.argv[1], "--version"]),
                  "inspect": timed([sys.argv[1], "inspect", sys.argv[2], "--json"])}))
PY
# The same pack written to memory (tmpfs): the codec's own speed, without this VM's disk + fsync.
shm=$(mktemp -d -p /dev/shm)
"$bench" pack "$work/big.safetensors" "$shm/big.peftpack" > "$work/pack-big-shm.json"
rm -rf "$shm"
"$python" - "$work" <<'PY'
import json, os, sys, time
path = f"{sys.argv[1]}/fsync-probe"
block = bytes(1 << 20)
start = time.perf_counter()
with open(path, "wb") as f:
    for _ in range(660):
        f.write(block)
    f.flush(); os.fsync(f.fileno())
json.dump({"seconds": time.perf_counter() - start}, open(f"{sys.argv[1]}/disk.json", "w"))
os.remove(path)
PY
"$python" - "$work" <<'PY'
import json, sys, time, zstandard
work = sys.argv[1]
pack = json.load(open(f"{work}/pack-big.json")); unpack = json.load(open(f"{work}/unpack-big.json"))
memory = json.load(open(f"{work}/pack-big-shm.json")); disk = json.load(open(f"{work}/disk.json"))
inspect = json.load(open(f"{work}/inspect.json"))
data = open(f"{work}/big.safetensors", "rb").read()
start = time.perf_counter(); frame = zstandard.ZstdCompressor(level=3, threads=2).compress(data); c = time.perf_counter() - start
start = time.perf_counter(); zstandard.ZstdDecompressor().decompress(frame); d = time.perf_counter() - start
print()
print("1 GiB of Gaussian bf16 weights, 2 cores, best of 3 (peftpack) / one run (python-zstandard -3, 2 threads)")
print("| | peftpack | python-zstandard -3 | ratio |")
print("|---|---|---|---|")
print(f"| compress GB/s, pack written to disk + fsync | {pack['gb_per_s']:.2f} | {len(data)/c/1e9:.2f} (in memory) | {pack['gb_per_s']/(len(data)/c/1e9):.2f}× |")
print(f"| compress GB/s, pack written to memory (tmpfs) | {memory['gb_per_s']:.2f} | {len(data)/c/1e9:.2f} | {memory['gb_per_s']/(len(data)/c/1e9):.2f}× |")
print(f"| this disk: writing + fsync of 660 MB (the pack's size) | {0.66 / disk['seconds']:.2f} GB/s of output | | |")
print(f"| decompress GB/s | {unpack['gb_per_s']:.2f} | {len(data)/d/1e9:.2f} | {unpack['gb_per_s']/(len(data)/d/1e9):.2f}× |")
print(f"| compressed / raw | {pack['stored']/pack['bytes']:.3f} | {len(frame)/len(data):.3f} | |")
opened = json.load(open(f"{work}/open-big.json"))
print()
print("inspect on this 1 GiB pack (header only; 1,024 chunks indexed): milliseconds")
print("| | min | median |")
print("|---|---|---|")
print(f"| preamble + header + index + adapter document, in process (best of 20) | {opened['seconds']*1000:.1f} | |")
for label, key in [("`peftpack inspect --json`, whole process", "inspect"), ("`peftpack --version`, whole process", "version"),
                   ("`/bin/true` (the harness's own spawn cost)", "true")]:
    print(f"| {label} | {inspect[key]['min']*1000:.1f} | {inspect[key]['median']*1000:.1f} |")
PY
