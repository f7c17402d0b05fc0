#!/usr/bin/env bash
# Builds llama.cpp's llama-quantize and llama-export-lora from the pinned source
# (scripts/llamacpp-source.sh) into .venv/llama.cpp-build, for Benchmarks/quantized.sh (not part of
# CI: ~10 min on 2 cores). Only those two targets and what they link, -j2, GGML_NATIVE=ON (the
# timings are of this machine's best kernels, as a user's own build would be). Skipped when both
# binaries exist and were built from the same source; prints the folder holding them.
# cmake comes from Debian's package when it is not on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
source_dir=$(bash scripts/llamacpp-source.sh)
build=.venv/llama.cpp-build
bin=$build/bin
stamp=$build/.source
if [ -x "$bin/llama-quantize" ] && [ -x "$bin/llama-export-lora" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$source_dir" ]; then
  echo "$PWD/$bin"
  exit 0
fi
if ! command -v cmake >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "llamacpp-build: installing cmake" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq cmake >/dev/null
fi
# Server, web UI, HTTPS and tests are off: none is needed, and the UI would be downloaded.
cmake -S "$source_dir" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF >"$build.configure.log" 2>&1 \
  || { tail -20 "$build.configure.log" >&2; echo "llamacpp-build: cmake configure failed (log: $build.configure.log)" >&2; exit 1; }
cmake --build "$build" --target llama-quantize llama-export-lora -j2 >"$build.log" 2>&1 \
  || { tail -20 "$build.log" >&2; echo "llamacpp-build: build failed (log: $build.log)" >&2; exit 1; }
echo "$source_dir" > "$stamp"
echo "$PWD/$bin"
