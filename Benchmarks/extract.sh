#!/usr/bin/env bash
# Extraction side by side, one run: rank-32 LoRA from a full fine-tune of a 0.49B-parameter
# Llama-shaped bf16 model, with mergekit-extract-lora (exact SVD per matrix, the anchor) and with
# `peftpack extract` (randomized SVD). Wall time and peak RSS from /usr/bin/time; the error of both
# is measured per module as ‖ΔW − B·A‖_F / ‖ΔW‖_F from their PEFT outputs (ours via `export`).
# The fine-tune is the workload in shared/RESEARCH/peft-formats.md: every 2-D non-embedding weight
# gets ΔW = U·diag(0.05·0.9^j, j < 64)·V (U, V Gaussian, scaled to unit columns/rows) plus 1e-4
# Gaussian noise, stored in bf16. BENCH_WORK reuses a folder (the base is shared with merge.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/python-envs.sh >/dev/null
bash Benchmarks/mergekit-env.sh >/dev/null
command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (Debian package 'time')" >&2; exit 1; }
swift build -c release --static-swift-stdlib --product peftpack >/dev/null
swift build -c release --static-swift-stdlib --product peftpack-bench >/dev/null
peftpack="$(swift build -c release --show-bin-path)/peftpack"
bench="$(swift build -c release --show-bin-path)/peftpack-bench"
work=${BENCH_WORK:-$(mktemp -d)}
python=.venv/peft/bin/python
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error TQDM_DISABLE=1 PYTHONWARNINGS=ignore
if [ ! -f "$work/base/config.json" ]; then
"$python" - "$work" <<'PY'
import sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
config = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=8, num_attention_heads=16,
                     num_key_value_heads=4, vocab_size=32000)
LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(f"{sys.argv[1]}/base", max_shard_size="500MB")
PY
fi
if [ ! -f "$work/finetuned/config.json" ]; then
"$python" - "$work" <<'PY'
import sys, json, shutil, torch
from pathlib import Path
from safetensors.torch import load_file, save_file
work = Path(sys.argv[1])
torch.manual_seed(1)
(work / "finetuned").mkdir(exist_ok=True)
for item in (work / "base").iterdir():
    if item.suffix != ".safetensors":
        shutil.copy(item, work / "finetuned" / item.name)
spectrum = 0.05 * 0.9 ** torch.arange(64, dtype=torch.float32)
for shard in sorted((work / "base").glob("*.safetensors")):
    tensors = load_file(str(shard))
    for name, value in tensors.items():
        if value.dim() != 2 or "embed_tokens" in name or "lm_head" in name:
            continue
        rows, cols = value.shape
        u = torch.randn(rows, 64) / rows ** 0.5
        v = torch.randn(64, cols) / cols ** 0.5
        delta = u @ torch.diag(spectrum) @ v + 1e-4 * torch.randn(rows, cols)
        tensors[name] = (value.float() + delta).to(torch.bfloat16)
    save_file(tensors, str(work / "finetuned" / shard.name), metadata={"format": "pt"})
PY
fi
measure() {  # prints "seconds peak_rss_kb"
  /usr/bin/time -f "%e %M" -o "$work/time.txt" "$@" > /dev/null 2>&1
  cat "$work/time.txt"
}
cat "$work"/base/*.safetensors "$work"/finetuned/*.safetensors > /dev/null
rm -rf "$work/mergekit-out" "$work/ours.peftpack" "$work/ours-peft"
read -r mk_s mk_kb < <(measure .venv/mergekit/bin/mergekit-extract-lora --model "$work/finetuned" --base-model "$work/base" \
  --out-path "$work/mergekit-out" --max-rank 32)
read -r ours_s ours_kb < <(measure "$peftpack" extract --base "$work/base" --finetuned "$work/finetuned" -o "$work/ours.peftpack" --rank 32 --quiet)
"$peftpack" export "$work/ours.peftpack" -o "$work/ours-peft" --format peft > /dev/null
floor=$("$bench" extract-floor "$work/base" 32 8 2)
echo "0.49B bf16 Llama-shaped base and full fine-tune (decaying spectrum + noise), rank 32, 2 cores, one run"
echo "| | wall s | peak RSS MB |"
echo "|---|---|---|"
echo "| mergekit-extract-lora --max-rank 32 (exact SVD) | $mk_s | $((mk_kb / 1024)) |"
echo "| peftpack extract --rank 32 (randomized, p = 8, q = 2) | $ours_s | $((ours_kb / 1024)) |"
"$python" - "$work" "$mk_s" "$ours_s" "$mk_kb" "$ours_kb" "$floor" <<'PY'
import sys, json, re, glob, torch
from safetensors.torch import load_file
work, mk_s, ours_s, mk_kb, ours_kb, floor = sys.argv[1], *map(float, sys.argv[2:6]), json.loads(sys.argv[6])
def weights(folder):
    out = {}
    for f in sorted(glob.glob(f"{folder}/*.safetensors")): out.update(load_file(f))
    return out
base, tuned = weights(f"{work}/base"), weights(f"{work}/finetuned")
def deltas(folder):
    config = json.load(open(f"{folder}/adapter_config.json"))
    factors = load_file(f"{folder}/adapter_model.safetensors")
    out = {}
    for key in factors:
        if not key.endswith("lora_A.weight"): continue
        module = key[len("base_model.model."):-len(".lora_A.weight")]
        a, b = factors[key].double(), factors[key.replace("lora_A", "lora_B")].double()
        r, alpha = config["r"], config["lora_alpha"]
        for pattern, value in config.get("rank_pattern", {}).items():
            if re.fullmatch(rf"(.*\.)?({pattern})", module): r = value
        for pattern, value in config.get("alpha_pattern", {}).items():
            if re.fullmatch(rf"(.*\.)?({pattern})", module): alpha = value
        out[module] = (alpha / r) * (b @ a)
    return out
ours, theirs = deltas(f"{work}/ours-peft"), deltas(f"{work}/mergekit-out")
ratios, ours_errors, their_errors = [], [], []
for module in sorted(theirs):
    exact = tuned[module + ".weight"].double() - base[module + ".weight"].double()
    norm = exact.norm()
    e_ours, e_theirs = (exact - ours[module]).norm() / norm, (exact - theirs[module]).norm() / norm
    ours_errors.append(e_ours.item()); their_errors.append(e_theirs.item()); ratios.append((e_ours / e_theirs).item())
mean = lambda values: sum(values) / len(values)
print(f"| speed-up | {mk_s / ours_s:.1f}× | RSS ratio {ours_kb / mk_kb:.2f} |")
print(f"| modules compared | {len(ratios)} | |")
print(f"| relative Frobenius error, mean over modules: mergekit / peftpack | {mean(their_errors):.5f} / {mean(ours_errors):.5f} | |")
print(f"| peftpack error / mergekit error per module: mean, worst | {mean(ratios):.4f}, {max(ratios):.4f} | |")
print(f"| floor: {floor['bytes'] / 1e9:.2f} GB read at {floor['memcpy_gb_per_s']:.1f} GB/s + {floor['flops'] / 1e9:.0f} GFLOP at {floor['sgemm_gflops']:.0f} GFLOP/s sgemm | {floor['floor_seconds']:.2f} | |")
print(f"| peftpack extract / floor | {ours_s / floor['floor_seconds']:.2f}× | |")
PY
