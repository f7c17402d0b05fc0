#!/usr/bin/env bash
# `peftpack verify` end to end (process start included) against the same check done in Python
# with transformers + peft: load the base, apply the adapter, run the reference input, compare.
# One run, side by side, on each fixture case named below; best of 3 per side.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/python-envs.sh >/dev/null
swift build -c release --static-swift-stdlib --product peftpack >/dev/null
peftpack="$(swift build -c release --show-bin-path)/peftpack"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
.venv/peft/bin/python - "$peftpack" "$work" <<'PY'
import json, subprocess, sys, time
peftpack, work = sys.argv[1], sys.argv[2]
fixtures = "fixtures/data"
python_check = r'''
import sys, torch, transformers
from peft import PeftModel
from safetensors.torch import load_file
base, adapter, ref = sys.argv[1:4]
reference = load_file(ref)
config = __import__("json").load(open(base + "/config.json"))
model = getattr(transformers, config["architectures"][0]).from_pretrained(base, dtype=torch.float32, attn_implementation="eager").eval()
model = PeftModel.from_pretrained(model, adapter).eval()
with torch.no_grad():
    out = model(input_ids=reference["input_ids"])
out = out.logits if hasattr(out, "logits") and out.logits is not None else out.last_hidden_state
error = (out - reference["output_adapter"]).abs().max().item()
sys.exit(0 if error <= 1e-4 * reference["output_adapter"].abs().max().item() else 1)
'''
def best(command, runs=3):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return min(times)
print("| case | peftpack verify (s) | transformers + peft (s) | speed-up |")
print("|---|---|---|---|")
for case, base in [("llama_lora", "llama-tiny"), ("bert_lora_bias", "bert-tiny"), ("gpt2_prefix", "gpt2-tiny")]:
    pack = f"{work}/{case}.peftpack"
    subprocess.run([peftpack, "import", f"{fixtures}/cases/{case}/adapter", "-o", pack], check=True, capture_output=True)
    ref = f"{fixtures}/cases/{case}/{case}.ref.safetensors"
    ours = best([peftpack, "verify", pack, "--base", f"{fixtures}/models/{base}", "--reference", ref])
    theirs = best([sys.executable, "-c", python_check, f"{fixtures}/models/{base}", f"{fixtures}/cases/{case}/adapter", ref])
    print(f"| {case} | {ours:.3f} | {theirs:.3f} | {theirs / ours:.0f}× |")
PY
