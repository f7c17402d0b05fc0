#!/usr/bin/env bash
# Peak memory against model size: the same Llama shape (hidden 2048, intermediate 5632, bf16,
# 500MB shards) at 2 and 8 layers, a rank-16 all-linear LoRA and a full fine-tune of each (every
# 2-D non-embedding weight perturbed), and the peak RSS of `import --base`, `merge` and `extract`
# on both. Reports the slope: extra peak RSS per extra GB of model. Streaming means the slope
# should be near zero (a few of the largest tensors, not the model). BENCH_WORK reuses a folder.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/python-envs.sh >/dev/null
swift build -c release --product peftpack >/dev/null
peftpack="$(swift build -c release --show-bin-path)/peftpack"
work=${BENCH_WORK:-$(mktemp -d)}
python=.venv/peft/bin/python
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error PYTHONWARNINGS=ignore
for layers in 2 8; do
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
measure() { /usr/bin/time -f "%M" -o "$work/rss.txt" "$@" > /dev/null 2>&1; echo $(( $(cat "$work/rss.txt") / 1024 )); }
declare -A rss size
for layers in 2 8; do
  dir="$work/memory-$layers"
  rm -rf "$dir/merged" "$dir/lora.peftpack" "$dir/extracted.peftpack"
  size[$layers]=$(du -cb "$dir"/base/*.safetensors | tail -1 | cut -f1)
  rss[import-$layers]=$(measure "$peftpack" import "$dir/lora" -o "$dir/lora.peftpack" --base "$dir/base")
  rss[merge-$layers]=$(measure "$peftpack" merge --base "$dir/base" "$dir/lora.peftpack" -o "$dir/merged")
  rss[extract-$layers]=$(measure "$peftpack" extract --base "$dir/base" --finetuned "$dir/finetuned" -o "$dir/extracted.peftpack" --rank 16)
done
echo "| command | peak RSS MB, $((size[2] / 1000000)) MB model | peak RSS MB, $((size[8] / 1000000)) MB model | slope, MB of RSS per GB of model |"
echo "|---|---|---|---|"
for command in import merge extract; do
  slope=$("$python" -c "print(f'{(${rss[$command-8]} - ${rss[$command-2]}) / ((${size[8]} - ${size[2]}) / 1e9):.1f}')")
  echo "| $command | ${rss[$command-2]} | ${rss[$command-8]} | $slope |"
done
