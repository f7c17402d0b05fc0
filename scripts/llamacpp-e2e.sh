#!/usr/bin/env bash
# End to end against llama.cpp itself (not part of CI: building llama.cpp takes ~10 min on 2 cores).
# 1. llama.cpp's source from the pinned llama-cpp-python sdist (scripts/llamacpp-source.sh); the
#    package is built from it into .venv/llamacpp (the Python binding over the real C++ runtime).
# 2. Each fixture base (llama-tiny and families/qwen3) is converted with llama.cpp's
#    convert_hf_to_gguf.py (f32). They have no tokenizer, so a throwaway SentencePiece model is
#    trained for the conversion only: the comparison feeds token ids, never text. families/mistral
#    is left out: llama.cpp runs Mistral as a Llama without its sliding window (the converter
#    writes none), so on the fixture's 3-token window its base logits are not transformers'.
# 3. For each LoRA fixture, `peftpack import` → `peftpack export --format gguf`, then llama.cpp
#    evaluates the reference input ids with the base GGUF and the adapter applied at run time
#    (--lora), and its logits are compared with PEFT's recorded output (the fixture reference) and
#    with llama.cpp's own logits for the base alone (its numerical distance from transformers). The
#    same adapters converted by llama.cpp's convert_lora_to_gguf.py are run too, for comparison:
#    rsLoRA with rank/alpha patterns is where that converter mis-scales.
set -euo pipefail
cd "$(dirname "$0")/.."
source_dir=$(bash scripts/llamacpp-source.sh)
bash scripts/python-envs.sh >/dev/null
# LLAMACPP_VENV: where the binding is built (default .venv/llamacpp).
venv=${LLAMACPP_VENV:-.venv/llamacpp}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import llama_cpp" 2>/dev/null; then
  echo "building llama-cpp-python 0.3.36 (llama.cpp) from source into $venv"
  rm -rf "$venv" && python3 -m venv "$venv"
  CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 \
    "$venv/bin/pip" install -q --no-binary llama-cpp-python numpy==2.4.6 \
    "$(dirname "$(dirname "$(dirname "$source_dir")")")"/llama_cpp_python-0.3.36.tar.gz
fi
swift build -c release --static-swift-stdlib --product peftpack >/dev/null
peftpack="$(swift build -c release --show-bin-path)/peftpack"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error PYTHONWARNINGS=ignore
# convert_base <fixture base folder> <name>: $work/<name>.gguf
convert_base() {
  cp -r "$1" "$work/$2"
  .venv/peft/bin/python - "$work/$2" <<'PY'
import sys, sentencepiece as spm, random
random.seed(0)
text = sys.argv[1] + "/corpus.txt"
with open(text, "w") as f:
    for _ in range(2000):
        f.write(" ".join("".join(random.choice("abcdefghij") for _ in range(random.randint(1, 6))) for _ in range(12)) + "\n")
spm.SentencePieceTrainer.train(input=text, model_prefix=sys.argv[1] + "/tokenizer", vocab_size=200, model_type="bpe",
                               bos_id=1, eos_id=2, unk_id=0, pad_id=-1, minloglevel=2)
PY
  PYTHONPATH="$source_dir/gguf-py" .venv/peft/bin/python "$source_dir/convert_hf_to_gguf.py" "$work/$2" --outtype f32 \
    --outfile "$work/$2.gguf" > "$work/$2.convert.log" 2>&1 || { tail -20 "$work/$2.convert.log"; exit 1; }
}
convert_base fixtures/data/models/llama-tiny llama
convert_base fixtures/data/families/qwen3/model qwen3
status=0
# <case folder under fixtures/data>:<base folder under fixtures/data>:<converted base name>
for entry in cases/llama_lora:models/llama-tiny:llama cases/llama_rslora_patterns:models/llama-tiny:llama \
             families/qwen3/cases/qwen3_lora:families/qwen3/model:qwen3; do
  IFS=: read -r folder base converted <<< "$entry"
  case=$(basename "$folder")
  "$peftpack" import "fixtures/data/$folder/adapter" -o "$work/$case.peftpack" --base "fixtures/data/$base" > /dev/null
  "$peftpack" export "$work/$case.peftpack" -o "$work/$case.gguf" --format gguf > /dev/null
  PYTHONPATH="$source_dir/gguf-py" .venv/peft/bin/python "$source_dir/convert_lora_to_gguf.py" "fixtures/data/$folder/adapter" \
    --base "fixtures/data/$base" --outtype f32 --outfile "$work/$case.llamacpp.gguf" > /dev/null 2>&1
  "$venv/bin/python" - "$work/$converted.gguf" "$work/$case.gguf" "fixtures/data/$folder/$case.ref.safetensors" "$case" <<'PY' || status=1
import sys, json, struct
import numpy as np
from llama_cpp import Llama
base, adapter, reference, case = sys.argv[1:5]
# safetensors without torch: 8-byte header length, JSON header, raw data.
with open(reference, "rb") as f:
    length = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(length))
    data = f.read()
def tensor(name):
    info = header[name]
    dtype = {"F32": np.float32, "I64": np.int64}[info["dtype"]]
    start, end = info["data_offsets"]
    return np.frombuffer(data[start:end], dtype=dtype).reshape(info["shape"])
ids = tensor("input_ids")
def logits(lora, row):
    llm = Llama(model_path=base, lora_path=lora, logits_all=True, n_ctx=64, n_threads=2, verbose=False)
    llm.eval([int(t) for t in ids[row]])
    return np.array(llm.scores[: ids.shape[1]], dtype=np.float64)
def worst(lora, key):
    expected = tensor(key)
    return max(float(np.abs(logits(lora, row) - expected[row]).max()) for row in range(ids.shape[0])), float(np.abs(expected).max())
# llama.cpp's own distance from transformers on the base alone: the numerical floor of the comparison.
floor, _ = worst(None, "output_base")
error, scale = worst(adapter, "output_adapter")
change = max(float(np.abs(tensor("output_adapter")[r] - tensor("output_base")[r]).max()) for r in range(ids.shape[0]))
# The adapter must not add more than the base's own discrepancy, and far less than the change it makes.
tolerance = 2 * floor + 1e-4 * scale
good = error <= tolerance and error < 0.05 * change
print(f"{'ok  ' if good else 'FAIL'} llama.cpp + peftpack GGUF adapter vs PEFT: {case}: max |Δlogit| {error:.3g} "
      f"(base alone: {floor:.3g}; the adapter moves logits by up to {change:.3g})")
converted = adapter.replace(".gguf", ".llamacpp.gguf")
import os
if os.path.exists(converted):
    theirs, _ = worst(converted, "output_adapter")
    print(f"info llama.cpp + its own convert_lora_to_gguf.py output: {case}: max |Δlogit| {theirs:.3g}")
sys.exit(0 if good else 1)
PY
done
exit $status
