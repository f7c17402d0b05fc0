#!/usr/bin/env bash
# End to end against llama.cpp itself (not part of CI: building llama.cpp takes ~10 min on 2 cores).
# 1. llama.cpp's source from the pinned llama-cpp-python sdist (scripts/llamacpp-source.sh); the
#    package is built from it into .venv/llamacpp (the Python binding over the real C++ runtime).
# 2. The fixture base llama-tiny is converted with llama.cpp's convert_hf_to_gguf.py (f32). It has
#    no tokenizer, so a throwaway SentencePiece model is trained for the conversion only: the
#    comparison feeds token ids, never text.
# 3. For each LoRA fixture, `peftpack import` → `peftpack export --format gguf`, then llama.cpp
#    evaluates the reference input ids with the base GGUF and the adapter applied at run time
#    (--lora), and its logits are compared with PEFT's recorded output (the fixture reference) and
#    with `peftpack verify`'s runtime. rsLoRA with rank/alpha patterns is included: that is where
#    llama.cpp's own converter mis-scales.
set -euo pipefail
cd "$(dirname "$0")/.."
source_dir=$(bash scripts/llamacpp-source.sh)
bash scripts/python-envs.sh >/dev/null
if [ ! -x .venv/llamacpp/bin/python ] || ! .venv/llamacpp/bin/python -c "import llama_cpp" 2>/dev/null; then
  echo "building llama-cpp-python 0.3.36 (llama.cpp) from source into .venv/llamacpp"
  rm -rf .venv/llamacpp && python3 -m venv .venv/llamacpp
  CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 \
    .venv/llamacpp/bin/pip install -q --no-binary llama-cpp-python numpy==2.4.6 \
    "$(dirname "$(dirname "$(dirname "$source_dir")")")"/llama_cpp_python-0.3.36.tar.gz
fi
swift build -c release --product peftpack >/dev/null
peftpack="$(swift build -c release --show-bin-path)/peftpack"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error PYTHONWARNINGS=ignore
cp -r fixtures/data/models/llama-tiny "$work/base"
.venv/peft/bin/python - "$work/base" <<'PY'
import sys, sentencepiece as spm, random
random.seed(0)
text = sys.argv[1] + "/corpus.txt"
with open(text, "w") as f:
    for _ in range(2000):
        f.write(" ".join("".join(random.choice("abcdefghij") for _ in range(random.randint(1, 6))) for _ in range(12)) + "\n")
spm.SentencePieceTrainer.train(input=text, model_prefix=sys.argv[1] + "/tokenizer", vocab_size=200, model_type="bpe",
                               bos_id=1, eos_id=2, unk_id=0, pad_id=-1, minloglevel=2)
PY
PYTHONPATH="$source_dir/gguf-py" .venv/peft/bin/python "$source_dir/convert_hf_to_gguf.py" "$work/base" --outtype f32 \
  --outfile "$work/base.gguf" > "$work/convert.log" 2>&1 || { tail -20 "$work/convert.log"; exit 1; }
status=0
for case in llama_lora llama_rslora_patterns; do
  "$peftpack" import "fixtures/data/cases/$case/adapter" -o "$work/$case.peftpack" --base fixtures/data/models/llama-tiny > /dev/null
  "$peftpack" export "$work/$case.peftpack" -o "$work/$case.gguf" --format gguf > /dev/null
  .venv/llamacpp/bin/python - "$work/base.gguf" "$work/$case.gguf" "fixtures/data/cases/$case/$case.ref.safetensors" "$case" <<'PY' || status=1
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
ids, expected = tensor("input_ids"), tensor("output_adapter")
llm = Llama(model_path=base, lora_path=adapter, logits_all=True, n_ctx=64, n_threads=2, verbose=False)
worst, scale = 0.0, float(np.abs(expected).max())
for row in range(ids.shape[0]):
    llm.reset()
    llm.eval([int(t) for t in ids[row]])
    logits = np.array(llm.scores[: ids.shape[1]], dtype=np.float64)
    worst = max(worst, float(np.abs(logits - expected[row]).max()))
tolerance = 1e-3 * scale
print(f"{'ok  ' if worst <= tolerance else 'FAIL'} llama.cpp + peftpack GGUF adapter vs PEFT: {case}: max |Δlogit| {worst:.3g} (tolerance {tolerance:.3g})")
sys.exit(0 if worst <= tolerance else 1)
PY
done
exit $status
