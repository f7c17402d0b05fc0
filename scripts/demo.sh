#!/usr/bin/env bash
# The main job on the bundled fixtures: pack a real PEFT LoRA (checked against its base), inspect
# the pack, verify it in the Swift runtime against the output PEFT itself computed and against
# PEFT's merged model, export it back to a folder PEFT loads, merge it into the base (streaming,
# one rounding) and verify the merged model against the adapter applied at run time; then extract
# a LoRA from a full fine-tune by SVD and check it against the fine-tune's own logits (transformers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
swift build -c release --static-swift-stdlib --product peftpack
bin="$(swift build -c release --show-bin-path)/peftpack"
fixtures=fixtures/data
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
set -x
"$bin" import "$fixtures/cases/llama_rslora_patterns/adapter" "$fixtures/cases/llama_prefix/adapter" \
    -o "$out/demo.peftpack" --name lora --name prefix --base "$fixtures/models/llama-tiny"
"$bin" inspect "$out/demo.peftpack" --verify
"$bin" verify "$out/demo.peftpack" --name lora --base "$fixtures/models/llama-tiny" \
    --reference "$fixtures/cases/llama_rslora_patterns/llama_rslora_patterns.ref.safetensors" \
    --merged "$fixtures/cases/llama_rslora_patterns/merged"
"$bin" verify "$out/demo.peftpack" --name prefix --base "$fixtures/models/llama-tiny" \
    --reference "$fixtures/cases/llama_prefix/llama_prefix.ref.safetensors"
"$bin" export "$out/demo.peftpack" --name lora -o "$out/lora-for-peft"
ls "$out/lora-for-peft"
"$bin" merge --base "$fixtures/models/llama-tiny" "$out/demo.peftpack:lora" -o "$out/merged"
"$bin" verify "$out/demo.peftpack" --name lora --base "$fixtures/models/llama-tiny" --merged "$out/merged"
"$bin" extract --base "$fixtures/models/llama-tiny" --finetuned "$fixtures/models/llama-tiny-ft" \
    -o "$out/extracted.peftpack" --energy 0.99
"$bin" verify "$out/extracted.peftpack" --base "$fixtures/models/llama-tiny" \
    --reference "$fixtures/extract_llama/reference.safetensors" --rtol 0.1
