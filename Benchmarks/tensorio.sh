#!/usr/bin/env bash
# Tensor I/O side by side, one run: reading every tensor of a 1 GB bf16 safetensors file and
# widening it to fp32, peftpack (release build) against safetensors + numpy/torch in Python.
# Warm page cache for both (best of 3 after a first pass), so this measures the code, not the disk.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/python-envs.sh >/dev/null
swift build -c release --product peftpack-bench >/dev/null
bench="$(swift build -c release --show-bin-path)/peftpack-bench"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python=.venv/peft/bin/python
"$python" - "$work/model.safetensors" <<'PY'
import sys, numpy as np
from safetensors.numpy import save_file
rng = np.random.default_rng(0)
tensors = {}
for i in range(64):  # 64 × 8 Mi bf16 elements = 1 GiB
    values = (rng.standard_normal(8 << 20, dtype=np.float32) * 0.02).view(np.uint32)
    tensors[f"layers.{i}.weight"] = (values >> 16).astype(np.uint16).reshape(2048, 4096)
save_file(tensors, sys.argv[1])
PY
# safetensors.numpy has no bf16 dtype: relabel the U16 tensors as BF16 in the header (same bytes).
"$python" - "$work/model.safetensors" <<'PY'
import sys, struct
path = sys.argv[1]
with open(path, "r+b") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = f.read(n).replace(b'"U16"', b'"BF16"')
    f.seek(8); f.write(header)
PY
cat "$work/model.safetensors" > /dev/null
"$bench" read "$work/model.safetensors" > "$work/swift-read.json"
"$bench" convert "$work/model.safetensors" > "$work/swift-convert.json"
"$python" - "$work" <<'PY'
import json, sys, time
import torch
from safetensors import safe_open
from safetensors.torch import load_file
work = sys.argv[1]
path = f"{work}/model.safetensors"
def best(body, runs=3):
    times = []
    for _ in range(runs):
        start = time.perf_counter(); body(); times.append(time.perf_counter() - start)
    return min(times)
size = sum(t.numel() * 2 for t in load_file(path).values())
read = best(lambda: load_file(path))
tensors = load_file(path)
convert = best(lambda: [t.float() for t in tensors.values()])
swift_read = json.load(open(f"{work}/swift-read.json"))
swift_convert = json.load(open(f"{work}/swift-convert.json"))
rows = [("read every tensor (GB/s)", swift_read["gb_per_s"], size / read / 1e9, "safetensors.torch.load_file"),
        ("bf16 → f32 (GB/s of bf16 in)", swift_convert["gb_per_s"], size / convert / 1e9, "torch .float()")]
print(f"1 GiB of bf16 tensors (64 × [2048, 4096]), torch {torch.__version__}, {torch.get_num_threads()} threads, best of 3, warm cache")
print("| operation | peftpack | Python | Python does | peftpack / Python |")
print("|---|---|---|---|---|")
for name, ours, theirs, how in rows:
    print(f"| {name} | {ours:.2f} | {theirs:.2f} | {how} | {ours / theirs:.2f}× |")
PY
