#!/usr/bin/env bash
# Stacking side by side, one run: four rank-16 all-linear LoRAs of the 0.49B-parameter Llama-shaped
# bf16 model (the merge benchmark's base), mixed with weights 0.4/0.3/0.2/0.1 and recompressed to
# rank 32, with PEFT (load the four + add_weighted_adapter(combination_type="svd", svd_rank=32) +
# save, one process; PEFT forms every module's dense ΔW and runs a full SVD) and with
# `peftpack stack --rank 32` (QR of the stacked factors + SVD of the 64×64 core; imports of the
# four PEFT folders timed separately). Both results are compared in fp64 with the exact weighted
# sum per module: ‖ΔW_exact − ΔW_result‖_F, which for a rank-32 truncation cannot be below the
# Eckart–Young optimum. The floor, measured in the same run: the four packs read at this disk's
# speed (stack runs on them evicted from the page cache, so it reads them from the disk) + the
# output written durably + the recompression's FLOPs at the sgemm speed of its own thin shapes
# (`peftpack-bench stack-floor`). BENCH_WORK reuses a folder.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/python-envs.sh >/dev/null
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
if [ ! -f "$work/stack-lora3/adapter_config.json" ]; then
"$python" - "$work" <<'PY'
import sys, torch
from transformers import AutoModelForCausalLM
from peft import LoraConfig, get_peft_model
work = sys.argv[1]
for index in range(4):
    torch.manual_seed(100 + index)
    model = AutoModelForCausalLM.from_pretrained(f"{work}/base", dtype=torch.bfloat16)
    lora = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, init_lora_weights=False,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    for name, parameter in lora.named_parameters():
        if "lora_" in name:
            parameter.data = parameter.data.float()
    lora.save_pretrained(f"{work}/stack-lora{index}")
PY
fi
cat > "$work/peft_stack.py" <<'PY'
import sys, torch
from transformers import AutoModelForCausalLM
from peft import PeftModel
work, out = sys.argv[1:3]
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(f"{work}/base", dtype=torch.bfloat16),
                                  f"{work}/stack-lora0", adapter_name="a0")
for index in range(1, 4):
    model.load_adapter(f"{work}/stack-lora{index}", adapter_name=f"a{index}")
model.add_weighted_adapter([f"a{i}" for i in range(4)], [0.4, 0.3, 0.2, 0.1], "mix", combination_type="svd", svd_rank=32)
model.save_pretrained(out, selected_adapters=["mix"])
PY
measure() {  # prints "seconds peak_rss_kb"
  /usr/bin/time -f "%e %M" -o "$work/time.txt" "$@" > /dev/null 2>&1
  cat "$work/time.txt"
}
cat "$work"/base/*.safetensors > /dev/null
rm -rf "$work/peft-mix" "$work/ours-mix.peftpack" "$work/ours-mix-peft"
read -r peft_s peft_kb < <(measure "$python" "$work/peft_stack.py" "$work" "$work/peft-mix")
import_s=0
for index in 0 1 2 3; do
  read -r seconds _ < <(measure "$peftpack" import "$work/stack-lora$index" -o "$work/stack-lora$index.peftpack" --base "$work/base" --force)
  import_s=$("$python" -c "print($import_s + $seconds)")
done
# Drops the files' pages from the page cache (posix_fadvise DONTNEED through dd; clean pages only).
evict() {
  local file
  sync
  for file in "$@"; do dd if="$file" iflag=nocache count=0 status=none; done
}
# The floor of `stack --rank RANK PACKS → OUTPUT` as table rows: the packs read at the disk's
# sequential speed (the faster of an O_DIRECT and a cold buffered read of SAMPLE, a base shard:
# the packs are too small to time), the output written with O_DIRECT + fsync, and the QR/SVD FLOPs.
stack_floor() {
  local seconds=$1 rank=$2 sample=$3 output=$4; shift 4
  local start end direct cold write_s out_bytes in_bytes
  start=$(date +%s.%N); dd if="$sample" of=/dev/null bs=8M iflag=direct status=none; end=$(date +%s.%N)
  direct=$("$python" -c "print($(stat -c %s "$sample") / ($end - $start))")
  evict "$sample"
  start=$(date +%s.%N); cat "$sample" > /dev/null; end=$(date +%s.%N)
  cold=$("$python" -c "print($(stat -c %s "$sample") / ($end - $start))")
  out_bytes=$(stat -c %s "$output")
  in_bytes=$(du -cb "$@" | tail -1 | cut -f1)
  start=$(date +%s.%N)
  dd if=/dev/zero of="$work/direct.bin" bs=1M count=$(( (out_bytes >> 20) + 1 )) oflag=direct conv=fsync status=none
  end=$(date +%s.%N)
  rm -f "$work/direct.bin"
  write_s=$("$python" -c "print($end - $start)")
  "$python" - "$seconds" "$direct" "$cold" "$write_s" "$in_bytes" "$out_bytes" "$("$bench" stack-floor "$rank" "$@")" <<'PY'
import json, sys
seconds, direct, cold, write_s, in_bytes, out_bytes = map(float, sys.argv[1:7])
f = json.loads(sys.argv[7])
read = max(direct, cold)
floor = in_bytes / read + write_s + f["compute_seconds"]
print(f"| floor: {in_bytes / 1e6:.0f} MB of packs read at {read / 1e9:.2f} GB/s (cold {cold / 1e9:.2f}, O_DIRECT {direct / 1e9:.2f}) + {out_bytes / 1e6:.0f} MB written with O_DIRECT + fsync ({write_s:.2f} s) + {f['flops'] / 1e9:.2f} GFLOP of QR/SVD over {f['modules']} modules at {f['sgemm_gflops']:.0f} GFLOP/s | {floor:.2f} | |")
print(f"| peftpack stack / floor | {seconds / floor:.2f}× | |")
PY
}
evict "$work"/stack-lora{0,1,2,3}.peftpack
read -r ours_s ours_kb < <(measure "$peftpack" stack "$work"/stack-lora{0,1,2,3}.peftpack --weight 0.4 --weight 0.3 --weight 0.2 --weight 0.1 \
  --rank 32 -o "$work/ours-mix.peftpack")
"$peftpack" export "$work/ours-mix.peftpack" -o "$work/ours-mix-peft" --format peft > /dev/null
echo "0.49B bf16 Llama-shaped base, four rank-16 all-linear LoRAs mixed 0.4/0.3/0.2/0.1 and recompressed to rank 32, 2 cores, one run"
echo "| | wall s | peak RSS MB |"
echo "|---|---|---|"
echo "| PEFT load 4 + add_weighted_adapter(svd, svd_rank=32) + save | $peft_s | $((peft_kb / 1024)) |"
echo "| peftpack stack --rank 32 | $ours_s | $((ours_kb / 1024)) |"
echo "| peftpack import of the four PEFT folders (once per adapter, total) | $import_s | |"
stack_floor "$ours_s" 32 "$(ls "$work"/base/*.safetensors | head -1)" "$work/ours-mix.peftpack" "$work"/stack-lora{0,1,2,3}.peftpack
"$python" - "$work" "$peft_s" "$ours_s" "$peft_kb" "$ours_kb" <<'PY'
import sys, json, re, torch
from safetensors.torch import load_file
work, peft_s, ours_s, peft_kb, ours_kb = sys.argv[1], *map(float, sys.argv[2:6])
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
        scale = alpha / (r ** 0.5 if config.get("use_rslora") else r)
        out[module] = scale * (b @ a)
    return out
inputs = [deltas(f"{work}/stack-lora{i}") for i in range(4)]
weights = [0.4, 0.3, 0.2, 0.1]
peft, ours = deltas(f"{work}/peft-mix/mix"), deltas(f"{work}/ours-mix-peft")  # PEFT saves a named adapter in a subfolder
errors_peft = errors_ours = optimal = 0.0
worst_ratio = 0.0
for module in sorted(inputs[0]):
    exact = sum(w * d[module] for w, d in zip(weights, inputs))
    s = torch.linalg.svdvals(exact)
    best = s[32:].pow(2).sum().sqrt().item()
    e_peft, e_ours = (exact - peft[module]).norm().item(), (exact - ours[module]).norm().item()
    errors_peft += e_peft ** 2; errors_ours += e_ours ** 2; optimal += best ** 2
    worst_ratio = max(worst_ratio, e_ours / e_peft)
print(f"| speed-up | {peft_s / ours_s:.0f}× | RSS ratio {ours_kb / peft_kb:.3f} |")
print(f"| total ‖ΔW_exact − ΔW‖_F over {len(inputs[0])} modules: optimal / PEFT / peftpack | {optimal ** 0.5:.6f} / {errors_peft ** 0.5:.6f} / {errors_ours ** 0.5:.6f} | |")
print(f"| worst module, peftpack error / PEFT error | {worst_ratio:.6f} | |")
PY
