#!/usr/bin/env bash
# GGUF dequantization side by side, one run: one [4096, 4096] tensor per ggml type (random blocks
# with finite fp16 scales; F16/BF16 from Gaussian values) widened to fp32 by peftpack (release
# build, one thread: the runtime widens a weight at a time) against gguf-py 0.19's
# gguf.quants.dequantize (numpy), the reference peftpack is bit-exact with. Warm page cache.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/python-envs.sh >/dev/null
swift build -c release --static-swift-stdlib --product peftpack-bench >/dev/null
bench="$(swift build -c release --show-bin-path)/peftpack-bench"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python=.venv/peft/bin/python
types="F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K"
"$python" - "$work" $types <<'PY'
import sys
sys.path.insert(0, "fixtures")
import gguf
import numpy as np
from gguf import GGMLQuantizationType as T
from fixturegen.gguf_quants import finite_halves
work, names = sys.argv[1], sys.argv[2:]
rng = np.random.default_rng(0)
# The fp16 fields of each block type, as byte offsets inside its block.
halves = {T.Q8_0: [0], T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}
for name in names:
    qtype = T[name]
    writer = gguf.GGUFWriter(f"{work}/{name}.gguf", arch="bench")
    if qtype in halves:
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, size=(4096 * 4096 // block, size), dtype=np.uint8)
        for offset in halves[qtype]:
            raw[:, offset:offset + 2] = finite_halves(rng, len(raw)).view(np.uint8).reshape(-1, 2)
        writer.add_tensor("w", raw.reshape(4096, -1), raw_dtype=qtype)
    else:
        writer.add_tensor("w", gguf.quants.quantize(rng.standard_normal((4096, 4096)).astype(np.float32), qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
PY
for name in $types; do
  cat "$work/$name.gguf" > /dev/null
  "$bench" dequantize "$work/$name.gguf" > "$work/$name.json"
done
"$python" - "$work" $types <<'PY'
import json, sys, time
import gguf
import numpy as np
work, names = sys.argv[1], sys.argv[2:]
def best(body, runs=3):
    times = []
    for _ in range(runs):
        start = time.perf_counter(); body(); times.append(time.perf_counter() - start)
    return min(times)
print(f"one [4096, 4096] tensor per type (16.8 M elements), gguf {gguf.__version__ if hasattr(gguf, '__version__') else '0.19'}, numpy {np.__version__}, best of 3, warm cache")
print("| type | peftpack (M elements/s) | gguf-py (M elements/s) | peftpack / gguf-py |")
print("|---|---|---|---|")
for name in names:
    tensor = gguf.GGUFReader(f"{work}/{name}.gguf").tensors[0]
    data = np.asarray(tensor.data)
    theirs = data.size and best(lambda: gguf.quants.dequantize(data, tensor.tensor_type))
    elements = int(np.prod([int(n) for n in tensor.shape]))
    ours = json.load(open(f"{work}/{name}.json"))["elements_per_s"] / 1e6
    print(f"| {name} | {ours:.0f} | {elements / theirs / 1e6:.0f} | {ours / (elements / theirs / 1e6):.1f}× |")
PY
