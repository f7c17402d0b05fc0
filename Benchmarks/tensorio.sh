#!/usr/bin/env bash
# Tensor I/O side by side, one run: reading every tensor of a 1 GB bf16 safetensors file and
# widening it to fp32, peftpack (release build) against safetensors + numpy/torch in Python.
# Warm page cache for both (best of 3 after a first pass), so this measures the code, not the disk.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/python-envs.sh >/dev/null
swift build -c release --static-swift-stdlib --product peftpack-bench >/dev/null
bench="$(swift build -c release --show-bin-path)/peftpack-bench"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python=.venv/peft/bin/python
"$python" - "$work/model.safetensors" <<'PY'
import sys, torch
from safetensors.torch import save_file
generator = torch.Generator().manual_seed(0)
# 64 × [2048, 4096] bf16 = 1 GiB of Gaussian weights (std 0.02, like trained projections).
save_file({f"layers.{i}.weight": (torch.randn(2048, 4096, generator=generator) * 0.02).to(torch.bfloat16)
           for i in range(64)}, sys.argv[1])
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
import xxhash
size = sum(t.numel() * 2 for t in load_file(path).values())
# Same work as peftpack's read: every tensor's bytes through XXH3 (safetensors maps lazily, so
# loading alone would touch nothing).
read = best(lambda: [xxhash.xxh3_64_intdigest(t.view(torch.uint8).numpy()) for t in load_file(path).values()])
tensors = load_file(path)
convert = best(lambda: [t.float() for t in tensors.values()])
swift_read = json.load(open(f"{work}/swift-read.json"))
swift_convert = json.load(open(f"{work}/swift-convert.json"))
rows = [("read every tensor (GB/s)", swift_read["gb_per_s"], size / read / 1e9, "safetensors.torch.load_file + XXH3 of each tensor"),
        ("bf16 → f32 (GB/s of bf16 in)", swift_convert["gb_per_s"], size / convert / 1e9, "torch .float()")]
print(f"1 GiB of bf16 tensors (64 × [2048, 4096]), torch {torch.__version__}, {torch.get_num_threads()} threads, best of 3, warm cache")
print("| operation | peftpack | Python | Python does | peftpack / Python |")
print("|---|---|---|---|---|")
for name, ours, theirs, how in rows:
    print(f"| {name} | {ours:.2f} | {theirs:.2f} | {how} | {ours / theirs:.2f}× |")
PY
