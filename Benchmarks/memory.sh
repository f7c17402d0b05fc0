#!/usr/bin/env bash
# Peak memory against model size: the same Llama shape (hidden 2048, intermediate 5632, bf16,
# 500MB shards) at 2, 8 and 16 layers (MEMORY_LAYERS), a rank-16 all-linear LoRA and a full
# fine-tune of each (every 2-D non-embedding weight perturbed), and the peak RSS of
# `import --base`, `merge` and `extract`, the largest of MEMORY_RUNS runs (5) each: extract's peak
# is two cores' working sets coinciding, which a single run may or may not catch. Reports the
# slope between the smallest and largest model: extra peak RSS per extra GB of model. Streaming
# means it should be near zero (a few of the largest tensors, not the model). BENCH_WORK reuses
# a folder.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/python-envs.sh >/dev/null
swift build -c release --static-swift-stdlib --product peftpack >/dev/null
peftpack="$(swift build -c release --show-bin-path)/peftpack"
work=${BENCH_WORK:-$(mktemp -d)}
python=.venv/peft/bin/python
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error PYTHONWARNINGS=ignore
layer_counts=(${MEMORY_LAYERS:-2 8 16})
runs=${MEMORY_RUNS:-5}
for layers in "${layer_counts[@]}"; do
  dir="$work/memory-$layers"
  [ -f "$dir/finetuned/config.json" ] && continue
  "$python" - "$dir" "$layers" <<'PY'
import sys, shutil, torch
from pathlib import Path
from transformers import LlamaConfig, LlamaForCausalLM
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
out, layers = Path(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
config = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=layers, num_attention_heads=16,
                     num_key_value_heads=4, vocab_size=32000)
model = LlamaForCausalLM(config).to(torch.bfloat16)
model.save_pretrained(out / "base", max_shard_size="500MB")
lora = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, init_lora_weights=False,
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
lora.save_pretrained(out / "lora")
(out / "finetuned").mkdir()
for item in (out / "base").iterdir():
    if item.suffix != ".safetensors":
        shutil.copy(item, out / "finetuned" / item.name)
for shard in sorted((out / "base").glob("*.safetensors")):
    tensors = load_file(str(shard))
    for name, value in tensors.items():
        if value.dim() == 2 and "embed" not in name and "lm_head" not in name:
            tensors[name] = (value.float() + 1e-3 * torch.randn_like(value.float())).to(torch.bfloat16)
    save_file(tensors, str(out / "finetuned" / shard.name), metadata={"format": "pt"})
PY
done
measure() {
  local peak=0 run kb
  for run in $(seq "$runs"); do
    rm -rf "$work/out"
    /usr/bin/time -f "%M" -o "$work/rss.txt" "$@" -o "$work/out" > /dev/null 2>&1
    kb=$(cat "$work/rss.txt")
    [ "$kb" -gt "$peak" ] && peak=$kb
  done
  rm -rf "$work/out"
  echo $(( peak / 1024 ))
}
declare -A rss size
for layers in "${layer_counts[@]}"; do
  dir="$work/memory-$layers"
  size[$layers]=$(du -cb "$dir"/base/*.safetensors | tail -1 | cut -f1)
  "$peftpack" import "$dir/lora" -o "$dir/lora.peftpack" --base "$dir/base" --force > /dev/null
  rss[import-$layers]=$(measure "$peftpack" import "$dir/lora" --base "$dir/base")
  rss[merge-$layers]=$(measure "$peftpack" merge --base "$dir/base" "$dir/lora.peftpack")
  rss[extract-$layers]=$(measure "$peftpack" extract --base "$dir/base" --finetuned "$dir/finetuned" --rank 16)
done
first=${layer_counts[0]}
last=${layer_counts[${#layer_counts[@]}-1]}
header="| command |"
rule="|---|"
for layers in "${layer_counts[@]}"; do
  header+=" peak RSS MB, $((size[$layers] / 1000000)) MB model ($layers layers) |"
  rule+="---|"
done
echo "$header slope, MB of RSS per GB of model |"
echo "$rule---|"
for command in import merge extract; do
  row="| $command |"
  for layers in "${layer_counts[@]}"; do row+=" ${rss[$command-$layers]} |"; done
  slope=$("$python" -c "print(f'{(${rss[$command-$last]} - ${rss[$command-$first]}) / ((${size[$last]} - ${size[$first]}) / 1e9):.1f}')")
  echo "$row $slope |"
done
