#!/usr/bin/env bash
# The portable (non-SIMD) dtype and merge kernels, tested on this machine: builds with
# PEFTPACK_PORTABLE_KERNELS (Sources/CDTypeKernels/vector_isa.h) into .build-portable, checks that
# no AVX code went into the kernels, runs the whole Swift suite there, then merges the committed
# fixtures to bf16, fp16 and fp32 with both builds and requires byte-identical outputs.
# Not part of CI: it doubles the build time. Usage: scripts/portable-kernels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
portable=(--scratch-path .build-portable -Xcc -DPEFTPACK_PORTABLE_KERNELS)

swift build --build-tests "${portable[@]}"
objects="$(swift build "${portable[@]}" --show-bin-path)/CDTypeKernels.build"
if objdump -d "$objects"/*.o | grep -q ymm; then
    echo "portable-kernels: $objects still holds AVX (ymm) code" >&2
    exit 1
fi
swift test --skip-build "${portable[@]}"

swift build
vector="$(swift build --show-bin-path)/peftpack"
scalar="$(swift build "${portable[@]}" --show-bin-path)/peftpack"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for case in llama_lora llama_dora llama_bf16_lora gpt2_lora_fan_in_fan_out; do
    base=fixtures/data/models/llama-tiny
    [[ $case == llama_bf16_lora ]] && base=fixtures/data/models/llama-tiny-bf16
    [[ $case == gpt2_* ]] && base=fixtures/data/models/gpt2-tiny
    "$vector" import "fixtures/data/cases/$case/adapter" -o "$work/$case.peftpack" --base "$base" >/dev/null
    for dtype in bf16 fp16 fp32; do
        for build in vector scalar; do
            "${!build}" merge --base "$base" "$work/$case.peftpack" -o "$work/$case-$dtype-$build" --dtype "$dtype" >/dev/null
        done
        for file in "$work/$case-$dtype-vector"/*.safetensors; do
            cmp "$file" "$work/$case-$dtype-scalar/$(basename "$file")"
        done
    done
done
echo "portable-kernels: whole suite passed; merges byte-identical to the vector build"
