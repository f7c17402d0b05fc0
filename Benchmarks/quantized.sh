#!/usr/bin/env bash
# Merging a LoRA into quantized bases side by side, one run, on the 0.49B workload of
# Benchmarks/workload.py (BENCH_WORK, default /work/bench: 0.5b/base bf16, 0.5b/lora rank 16 on
# every linear layer). Derived bases are cached under BENCH_WORK/quantized; the outputs are removed.
#
# 1. NF4 with double quantization, as transformers saves it (BitsAndBytesConfig nf4 + double quant,
#    on CPU, bf16 like the checkpoint). PEFT: transformers loads it pre-quantized on CPU,
#    PeftModel.from_pretrained + merge_and_unload, and its state dict written as safetensors (one
#    process; save_pretrained of a model loaded pre-quantized raises NotImplementedError in
#    transformers 5, and the state dict is what it would write). peftpack: `merge --dtype same`
#    (`import --base NF4` timed separately). Then the two outputs' stored tensors, byte for byte.
# 2. GGUF Q4_K_M: the base converted to F16 by llama.cpp's convert_hf_to_gguf.py (a throwaway
#    SentencePiece tokenizer: the converter needs one) and llama-quantize'd to Q4_K_M, the pack
#    exported with `peftpack export --format gguf`. llama-export-lora (built by
#    scripts/llamacpp-build.sh, 2 threads) against `peftpack merge` into the same Q4_K_M file, by
#    default (merged tensors as F16, the same job) and with `--dtype same` (requantized). Skipped
#    with a line when this peftpack refuses a GGUF base. Then the F16 merged tensors compared.
#
# Each command starts with its inputs evicted from the page cache (per file, posix_fadvise, as
# scale.sh), under /usr/bin/time (wall, peak RSS). Progress to stderr, tables to stdout.
# QUANTIZED_PARTS=nf4 runs the NF4 part only.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (Debian package 'time')" >&2; exit 1; }
work=${BENCH_WORK:-/work/bench}
size=0.5b
base=$work/$size/base
lora=$work/$size/lora
cache=$work/quantized
[ -f "$work/$size/READY" ] || { echo "no workload in $work/$size: run .venv/peft/bin/python Benchmarks/workload.py $size --work $work" >&2; exit 1; }
bash scripts/python-envs.sh >/dev/null
python=.venv/peft/bin/python
bnb=.venv/bnb/bin/python
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error PYTHONWARNINGS=ignore
swift build -c release --static-swift-stdlib --product peftpack >/dev/null
peftpack="$(swift build -c release --show-bin-path)/peftpack"
run=$cache/run
mkdir -p "$cache"
rm -rf "$run" && mkdir "$run"
trap 'rm -rf "$run"' EXIT

log() { echo "quantized.sh: $*" >&2; }
evict() {
  local file
  sync
  for file in "$@"; do dd if="$file" iflag=nocache count=0 status=none; done
}
# measure NAME COMMAND...: runs it with stdout to $run/NAME.out, stderr to $run/NAME.err; sets
# NAME_s, NAME_mb and NAME_code (0 when it succeeded).
measure() {
  local name=$1 code=0 seconds kb; shift
  /usr/bin/time -f "%e %M" -o "$run/$name.time" "$@" >"$run/$name.out" 2>"$run/$name.err" || code=$?
  read -r seconds kb < <(tail -1 "$run/$name.time")
  printf -v "${name}_s" '%s' "$seconds"
  printf -v "${name}_mb" '%s' "$((kb / 1024))"
  printf -v "${name}_code" '%s' "$code"
  if [ "$code" -eq 0 ]; then log "$name: $seconds s, $((kb / 1024)) MB"; else log "$name: exit $code: $(tail -1 "$run/$name.err")"; fi
}
ratio() { "$python" -c "print(f'{$1 / $2:.1f}')"; }
load=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average at the start: $load"

# --- 1. NF4 -------------------------------------------------------------------------------------
nf4=$cache/nf4
if [ ! -f "$nf4/config.json" ]; then
  log "quantizing the base to NF4 with double quant (transformers + bitsandbytes, CPU)"
  rm -rf "$nf4.partial"
  "$bnb" - "$base" "$nf4.partial" <<'PY'
import sys, torch
from transformers import BitsAndBytesConfig, LlamaForCausalLM
base, out = sys.argv[1:3]
config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)
LlamaForCausalLM.from_pretrained(base, quantization_config=config, device_map="cpu", dtype=torch.bfloat16).save_pretrained(out)
PY
  mv "$nf4.partial" "$nf4"
fi
cat > "$run/peft_merge_nf4.py" <<'PY'
import shutil, sys
from pathlib import Path
from peft import PeftModel
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM
base, lora, out = sys.argv[1:4]
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, device_map="cpu"), lora).merge_and_unload()
Path(out).mkdir()
save_file({name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}, f"{out}/model.safetensors",
          metadata={"format": "pt"})
shutil.copy(f"{base}/config.json", out)
PY
evict "$nf4"/*.safetensors "$lora/adapter_model.safetensors"
measure peft_nf4 "$bnb" "$run/peft_merge_nf4.py" "$nf4" "$lora" "$run/peft-nf4"
evict "$nf4"/*.safetensors "$lora/adapter_model.safetensors"
measure import_nf4 "$peftpack" import "$lora" -o "$run/nf4.peftpack" --base "$nf4"
evict "$nf4"/*.safetensors "$run/nf4.peftpack"
measure ours_nf4 "$peftpack" merge --base "$nf4" "$run/nf4.peftpack" -o "$run/ours-nf4" --dtype same
# The floor: reading the base and writing a file of its size, what any merge of it does at least.
evict "$nf4"/*.safetensors
measure floor_nf4 cp "$nf4"/model*.safetensors "$run/"
rm -f "$run"/model*.safetensors
nf4_mb=$(( $(du -cb "$nf4"/*.safetensors | tail -1 | cut -f1) / 1000000 ))
echo
echo "### NF4 (bitsandbytes, double quant): $size base quantized by transformers ($nf4_mb MB), rank-16 LoRA on all linear layers"
echo
echo "2 cores, one run, load average $load at the start; inputs evicted from the page cache before each command."
echo
echo "| | wall s | peak RSS MB |"
echo "|---|---|---|"
row() {  # LABEL NAME
  local s=${2}_s mb=${2}_mb code=${2}_code
  if [ "${!code}" -eq 0 ]; then echo "| $1 | ${!s} | ${!mb} |"; else echo "| $1 | **failed, exit ${!code}**: $(tail -1 "$run/$2.err") | |"; fi
}
row "PEFT + bitsandbytes: load NF4 + merge_and_unload + state dict saved" peft_nf4
row "\`peftpack merge --dtype same\` (stays NF4)" ours_nf4
row "\`peftpack import --base NF4\` (once per adapter)" import_nf4
row "floor: \`cp\` of the NF4 checkpoint (read and write its bytes)" floor_nf4
if [ "$peft_nf4_code" -eq 0 ] && [ "$ours_nf4_code" -eq 0 ]; then
  echo "| speed-up (merge) | $(ratio "$peft_nf4_s" "$ours_nf4_s")× (PEFT ÷ floor: $(ratio "$peft_nf4_s" "$floor_nf4_s")×; peftpack ÷ floor: $(ratio "$ours_nf4_s" "$floor_nf4_s")×) | RSS ratio $("$python" -c "print(f'{$ours_nf4_mb / $peft_nf4_mb:.2f}')") |"
  "$bnb" - "$run/ours-nf4" "$run/peft-nf4" "$nf4" <<'PY'
import glob, json, sys
import torch
from bitsandbytes.functional import QuantState, dequantize_4bit
from safetensors.torch import load_file
def read(folder):
    out = {}
    for path in sorted(glob.glob(f"{folder}/*.safetensors")):
        out.update(load_file(path))
    return out
ours, peft, base = read(sys.argv[1]), read(sys.argv[2]), read(sys.argv[3])
raw = lambda t: t.contiguous().reshape(-1).view(torch.uint8)
equal = lambda a, b: a.dtype == b.dtype and a.shape == b.shape and torch.equal(raw(a), raw(b))
common = sorted(set(ours) & set(peft))
# A merged weight: a packed 4-bit weight one of whose stored tensors either output changed (the
# codes alone can stay: a change smaller than an NF4 step moves only absmax).
weights = [n for n in common if n.endswith(".weight") and base[n].dtype == torch.uint8]
group = lambda w: [n for n in common if n == w or n.startswith(w + ".")]
merged = [w for w in weights if any(not (equal(ours[n], base[n]) and equal(peft[n], base[n])) for n in group(w))]
in_merged = {n for w in merged for n in group(w)}
same = [n for n in common if equal(ours[n], peft[n])]
counts = {"codes": [0, 0], "absmax": [0, 0], "nested_absmax": [0, 0]}
fields, states, other = {}, 0, []
for w in merged:
    a, b = ours[w].reshape(-1), peft[w].reshape(-1)
    counts["codes"][0] += int(((a >> 4) != (b >> 4)).sum() + ((a & 15) != (b & 15)).sum())
    counts["codes"][1] += 2 * a.numel()
    for key in ("absmax", "nested_absmax"):
        a, b = ours[f"{w}.{key}"].reshape(-1), peft[f"{w}.{key}"].reshape(-1)
        counts[key][0] += int((a != b).sum())
        counts[key][1] += a.numel()
    for name in group(w):
        if ".quant_state." in name and not equal(ours[name], peft[name]):
            states += 1
            sa, sb = json.loads(bytes(ours[name].tolist())), json.loads(bytes(peft[name].tolist()))
            for key in sorted(set(sa) | set(sb)):
                if sa.get(key) != sb.get(key):
                    fields.setdefault(key, set()).add("" if key == "nested_offset" else f"{sa.get(key)} vs PEFT's {sb.get(key)}")
        elif name.endswith(("quant_map",)) and not equal(ours[name], peft[name]):
            other.append(name)
untouched = [n for n in common if n not in in_merged]
print(f"| stored tensors byte-identical to PEFT's | {len(same)} of {len(common)} (untouched: {sum(n in same for n in untouched)} of "
      f"{len(untouched)}) | {len(merged)} merged weights of 6 tensors each; names only in one output: {len(set(ours) ^ set(peft))} |")
print(f"| 4-bit codes of the merged weights that differ | {counts['codes'][0]} of {counts['codes'][1]} | |")
print(f"| absmax (8-bit double-quant codes) that differ | {counts['absmax'][0]} of {counts['absmax'][1]} | |")
print(f"| nested absmax (fp32) that differ | {counts['nested_absmax'][0]} of {counts['nested_absmax'][1]} | |")
described = "; ".join(key + (f" ({', '.join(sorted(v))})" if any(v) else "") for key, v in fields.items())
print(f"| quant states (JSON) that differ | {states} of {len(merged)} | fields: {described or 'none'} |")
if other:
    print(f"| code tables that differ | {len(other)} | e.g. {', '.join(other[:3])} |")
def dequantized(tensors, weight):
    """bnb's dequantization of a stored weight, in fp32 whatever dtype its quant state names, so
    only the stored bytes are compared."""
    state = QuantState.from_dict({k[len(weight) + 1:]: v for k, v in tensors.items() if k.startswith(weight + ".")}, device=torch.device("cpu"))
    state.dtype = torch.float32
    return dequantize_4bit(tensors[weight], state)
worst = relative = 0.0
differ = elements = 0
for w in merged:
    a, b = dequantized(ours, w), dequantized(peft, w)
    worst = max(worst, (a - b).abs().max().item())
    relative = max(relative, ((a - b).abs() / b.abs().clamp_min(1e-30)).max().item())
    differ += int((a != b).sum())
    elements += a.numel()
print(f"| merged weights dequantized (fp32): elements that differ | {differ} of {elements} | max abs diff {worst:.3g}, max relative {relative:.3g} |")
PY
fi
rm -rf "$run/peft-nf4" "$run/ours-nf4"

# --- 2. GGUF Q4_K_M ----------------------------------------------------------------------------
if [ "${QUANTIZED_PARTS:-nf4 gguf}" = nf4 ]; then log "QUANTIZED_PARTS=nf4: GGUF part skipped"; exit 0; fi
bins=$(bash scripts/llamacpp-build.sh)
source_dir=$(bash scripts/llamacpp-source.sh)
gguf=$cache/gguf
mkdir -p "$gguf"
if [ ! -f "$gguf/base-f16.gguf" ]; then
  log "converting the base to GGUF F16 (convert_hf_to_gguf.py)"
  rm -rf "$gguf/hf" && mkdir "$gguf/hf"
  ln -s "$base"/*.safetensors "$base"/*.index.json "$gguf/hf/"
  "$python" - "$base" "$gguf/hf" <<'PY'
import json, sys
from pathlib import Path
import sentencepiece
base, folder = Path(sys.argv[1]), Path(sys.argv[2])
# workload.py's config.json names no architecture, which the converter picks its class by.
config = json.loads((base / "config.json").read_text())
(folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], **config}, indent=2))
text = folder / "corpus.txt"
text.write_text("\n".join(f"the quick brown fox {n} jumps over the lazy dog {n * 7 % 13}" for n in range(200)) + "\n")
sentencepiece.SentencePieceTrainer.train(input=str(text), model_prefix=str(folder / "tokenizer"), vocab_size=64,
                                         model_type="bpe", num_threads=1, minloglevel=2, character_coverage=1.0)
PY
  PYTHONPATH="$source_dir/gguf-py" "$python" "$source_dir/convert_hf_to_gguf.py" "$gguf/hf" --outtype f16 \
    --outfile "$gguf/base-f16.gguf.partial" > "$gguf/convert.log" 2>&1 || { tail -20 "$gguf/convert.log" >&2; exit 1; }
  mv "$gguf/base-f16.gguf.partial" "$gguf/base-f16.gguf"
fi
q4=$gguf/base-q4_k_m.gguf
if [ ! -f "$q4" ]; then
  log "llama-quantize to Q4_K_M"
  "$bins/llama-quantize" "$gguf/base-f16.gguf" "$q4.partial" Q4_K_M 2 > "$gguf/quantize.log" 2>&1 || { tail -20 "$gguf/quantize.log" >&2; exit 1; }
  mv "$q4.partial" "$q4"
fi
evict "$q4" "$lora/adapter_model.safetensors"
measure import_q4 "$peftpack" import "$lora" -o "$run/q4.peftpack" --base "$q4"
if [ "$import_q4_code" -ne 0 ]; then
  log "import --base Q4_K_M refused; importing against the bf16 base the GGUF was converted from"
  measure import_q4 "$peftpack" import "$lora" -o "$run/q4.peftpack" --base "$base"
fi
measure export_gguf "$peftpack" export "$run/q4.peftpack" -o "$run/lora.gguf" --format gguf
evict "$q4" "$run/lora.gguf"
measure llama_q4 "$bins/llama-export-lora" -m "$q4" --lora "$run/lora.gguf" -o "$run/llama-out.gguf" -t 2
evict "$q4" "$run/q4.peftpack"
measure ours_q4 "$peftpack" merge --base "$q4" "$run/q4.peftpack" -o "$run/ours-f16.gguf"
q4_mb=$(( $(du -b "$q4" | cut -f1) / 1000000 ))
echo
echo "### GGUF Q4_K_M: $size base converted by convert_hf_to_gguf.py and llama-quantize'd ($q4_mb MB), the same LoRA"
echo
echo "2 cores, one run, load average $load at the start of the whole script ($(cut -d' ' -f1-3 /proc/loadavg) now); inputs evicted from the page cache before each command; llama-export-lora with -t 2."
echo
echo "| | wall s | peak RSS MB |"
echo "|---|---|---|"
row "\`llama-export-lora -m base-q4_k_m.gguf --lora lora.gguf\` (merged tensors F16)" llama_q4
if [ "$ours_q4_code" -ne 0 ]; then
  echo "| \`peftpack merge --base base-q4_k_m.gguf\` | **not run: this peftpack refuses a GGUF base** ($(tail -1 "$run/ours_q4.err")) | |"
  log "peftpack merge refuses a GGUF base; skipping the GGUF comparison"
  exit 0
fi
evict "$q4" "$run/q4.peftpack"
measure same_q4 "$peftpack" merge --base "$q4" "$run/q4.peftpack" -o "$run/ours-same.gguf" --dtype same
row "\`peftpack merge --base base-q4_k_m.gguf\` (merged tensors F16, the same job)" ours_q4
row "\`peftpack merge --base base-q4_k_m.gguf --dtype same\` (each merged tensor requantized to its own type)" same_q4
row "\`peftpack import --base\` (once per adapter)" import_q4
row "\`peftpack export --format gguf\` (the LoRA for llama-export-lora)" export_gguf
[ "$llama_q4_code" -eq 0 ] && echo "| speed-up (merge, F16 output) | $(ratio "$llama_q4_s" "$ours_q4_s")× | RSS ratio $("$python" -c "print(f'{$ours_q4_mb / $llama_q4_mb:.2f}')") |"
[ "$llama_q4_code" -eq 0 ] || exit 0
same_file=$run/ours-same.gguf
[ "$same_q4_code" -eq 0 ] || same_file=""
PYTHONPATH="$source_dir/gguf-py" "$python" - "$q4" "$run/llama-out.gguf" "$run/ours-f16.gguf" "$same_file" <<'PY'
import sys
import numpy as np
import gguf
base_path, llama_path, ours_path, same_path = sys.argv[1:5]
def tensors(path):
    return {t.name: t for t in gguf.GGUFReader(path).tensors}
base, llama, ours = tensors(base_path), tensors(llama_path), tensors(ours_path)
T = gguf.GGMLQuantizationType
values = lambda t: gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32).reshape(-1)
merged = [n for n in llama if llama[n].tensor_type != base[n].tensor_type or n not in base]
copied = [n for n in llama if n not in merged]
types_agree = sum(1 for n in llama if n in ours and ours[n].tensor_type == llama[n].tensor_type)
copies_equal = sum(1 for n in copied if n in ours and bytes(np.asarray(ours[n].data)) == bytes(np.asarray(llama[n].data)))
worst, differ, elements, change, ulp_worst = 0.0, 0, 0, 0.0, 0
for name in merged:
    if name not in ours or ours[name].tensor_type != T.F16:
        continue
    a, b = np.asarray(llama[name].data).reshape(-1), np.asarray(ours[name].data).reshape(-1)
    d = np.abs(a.astype(np.float32) - b.astype(np.float32))
    worst = max(worst, float(d.max()))
    differ += int((a != b).sum())
    elements += a.size
    # ULPs between two F16 values of one sign: their bit patterns' distance.
    ulp_worst = max(ulp_worst, int(np.abs(a.view(np.int16).astype(np.int32) - b.view(np.int16).astype(np.int32))[np.sign(a) == np.sign(b)].max(initial=0)))
    change = max(change, float(np.abs(a.astype(np.float32) - values(base[name])).max()))
print(f"| tensors with the same type in both outputs | {types_agree} of {len(llama)} ({len(merged)} merged to F16 by llama-export-lora, {len(copied)} copied) | |")
print(f"| copied tensors byte-identical | {copies_equal} of {len(copied)} | |")
print(f"| F16 merged elements that differ (llama.cpp's ΔW in its own fp32 matmul) | {differ} of {elements} | max abs diff {worst:.3g}, at most {ulp_worst} F16 ulp; largest change merged − dequantized base {change:.3g} |")
if same_path:
    same = tensors(same_path)
    kept = sum(1 for n in base if n in same and same[n].tensor_type == base[n].tensor_type)
    gap = max(float(np.abs(values(same[n]) - np.asarray(llama[n].data).astype(np.float32).reshape(-1)).max()) for n in merged if n in same)
    print(f"| `--dtype same`: tensors keeping the base's type | {kept} of {len(base)} | dequantized vs llama-export-lora's F16: max abs diff {gap:.3g} (the requantization error) |")
PY
