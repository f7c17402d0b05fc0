#!/usr/bin/env bash
# Merge side by side, one run: a rank-16 all-linear LoRA into a 0.49B-parameter Llama-shaped bf16
# model (sharded at 500MB), with PEFT (load + merge_and_unload + save_pretrained, one process) and
# with `peftpack merge` (import of the PEFT folder timed separately). Wall time and peak RSS from
# /usr/bin/time. The workload is the one in shared/RESEARCH/peft-formats.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/python-envs.sh >/dev/null
command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (Debian package 'time')" >&2; exit 1; }
swift build -c release --static-swift-stdlib --product peftpack >/dev/null
swift build -c release --static-swift-stdlib --product peftpack-bench >/dev/null
peftpack="$(swift build -c release --show-bin-path)/peftpack"
work=${BENCH_WORK:-$(mktemp -d)}
python=.venv/peft/bin/python
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
if [ ! -f "$work/base/config.json" ]; then
"$python" - "$work" <<'PY'
import sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
from peft import LoraConfig, get_peft_model
work = sys.argv[1]
torch.manual_seed(0)
config = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=8, num_attention_heads=16,
                     num_key_value_heads=4, vocab_size=32000)
model = LlamaForCausalLM(config).to(torch.bfloat16)
model.save_pretrained(f"{work}/base", max_shard_size="500MB")
lora = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, init_lora_weights=False,
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
for name, parameter in lora.named_parameters():
    if "lora_" in name:
        parameter.data = parameter.data.float()
lora.save_pretrained(f"{work}/lora")
PY
fi
cat > "$work/peft_merge.py" <<'PY'
import sys, torch
from transformers import AutoModelForCausalLM
from peft import PeftModel
base, lora, out = sys.argv[1:4]
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16), lora)
model.merge_and_unload().save_pretrained(out, max_shard_size="500MB")
PY
measure() {  # prints "seconds peak_rss_kb"
  /usr/bin/time -f "%e %M" -o "$work/time.txt" "$@" > /dev/null
  cat "$work/time.txt"
}
cat "$work"/base/*.safetensors > /dev/null
rm -rf "$work/peft-out" "$work/ours-out" "$work/lora.peftpack"
read -r peft_s peft_kb < <(measure "$python" "$work/peft_merge.py" "$work/base" "$work/lora" "$work/peft-out")
read -r import_s import_kb < <(measure "$peftpack" import "$work/lora" -o "$work/lora.peftpack" --base "$work/base")
read -r ours_s ours_kb < <(measure "$peftpack" merge --base "$work/base" "$work/lora.peftpack" -o "$work/ours-out")
bytes=$(du -cb "$work"/base/*.safetensors | tail -1 | cut -f1)
echo "0.49B bf16 Llama-shaped base ($(($bytes / 1000000)) MB, 500MB shards), rank-16 LoRA on all linear layers, 2 cores, one run"
echo "| | wall s | peak RSS MB |"
echo "|---|---|---|"
echo "| PEFT load + merge_and_unload + save_pretrained | $peft_s | $((peft_kb / 1024)) |"
echo "| peftpack merge | $ours_s | $((ours_kb / 1024)) |"
echo "| peftpack import of the PEFT folder (once per adapter) | $import_s | $((import_kb / 1024)) |"
read -r floor_json < <(.build/release/peftpack-bench merge-floor "$work/lora.peftpack" "$work/base")
rm -f "$work/direct.bin"
direct_s=$( { /usr/bin/time -f "%e" dd if=/dev/zero of="$work/direct.bin" bs=8M count=$((bytes / 8388608)) oflag=direct conv=fsync status=none; } 2>&1 )
rm -f "$work/direct.bin"
"$python" - "$floor_json" "$direct_s" "$ours_s" <<'PY'
import json, sys
floor, direct, ours = json.loads(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
print(f"| floor: bytes in + out at {floor['memcpy_gb_per_s']:.1f} GB/s memcpy + {floor['flops']/1e9:.1f} GFLOP at {floor['sgemm_gflops']:.0f} GFLOP/s sgemm | {floor['floor_seconds']:.2f} | |")
print(f"| floor: writing the output durably with O_DIRECT (dd, same size) | {direct:.2f} | |")
print(f"| peftpack merge / max(the two floors) | {ours / max(direct, floor['floor_seconds']):.2f}× | |")
PY
"$python" -c "print(f'| speed-up (merge) | {$peft_s / $ours_s:.1f}× | RSS ratio {$ours_kb / $peft_kb:.2f} |')"
"$python" - "$work" <<'PY'
import sys, glob, torch
from safetensors.torch import load_file
work = sys.argv[1]
def load(folder):
    out = {}
    for f in sorted(glob.glob(f"{folder}/*.safetensors")): out.update(load_file(f))
    return out
ours, peft = load(f"{work}/ours-out"), load(f"{work}/peft-out")
differ = sum(int((ours[k] != peft[k]).sum()) for k in peft)
total = sum(v.numel() for v in peft.values())
print(f"| elements where peftpack's single rounding and PEFT's double rounding differ | {differ} of {total} | |")
PY
