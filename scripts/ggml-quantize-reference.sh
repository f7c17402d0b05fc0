#!/usr/bin/env bash
# ggml's reference K-quant quantizers (quantize_row_q{4,5,6}_K_ref, what llama-quantize runs without
# an imatrix), as a command for fixture generators; outside CI.
#
#     scripts/ggml-quantize-reference.sh TYPE IN.f32 OUT.bin   # TYPE: Q4_K, Q5_K or Q6_K
#     scripts/ggml-quantize-reference.sh --check               # committed fixture == a fresh C run
#     scripts/ggml-quantize-reference.sh --fused TYPE IN.f32 OUT.bin  # the FMA-contracted variant
#
# IN.f32 is raw little-endian float32, a whole number of 256-value blocks; OUT.bin gets the
# blocks. The first run compiles scripts/ggml-reference/quantize.c with ggml-quants.c of the
# pinned llama.cpp source (scripts/llamacpp-source.sh) into .venv/ggml-reference/, portably: -O2,
# no -march, -ffp-contract=off (so no product is fused into an add, as in a generic build of
# ggml) and -DNDEBUG as ggml's release build. It rebuilds when the sources or flags change.
#
# --check requantizes fixtures/data/gguf_quantize's input and compares every K-quant byte with
# the committed ones (exit 1 on any difference), then counts the blocks a build with FMA
# contraction (-mfma -ffp-contract=fast) would change: the fixture is sensitive to it. --fused
# runs that variant, with which the generator picks rows where the two builds differ.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
llama=$(scripts/llamacpp-source.sh)
ggml=$llama/ggml
target=$root/.venv/ggml-reference
flags=(-std=c11 -O2 -DNDEBUG -fno-fast-math -ffp-contract=off)

# build NAME FLAGS...: the harness at $target/NAME, rebuilt when its inputs change.
build() {
  local name=$1; shift
  local stamp
  stamp=$(cat scripts/ggml-reference/quantize.c "$ggml/src/ggml-quants.c" | sha256sum | cut -d' ' -f1)" $*"
  if [ ! -x "$target/$name" ] || [ "$(cat "$target/$name.stamp" 2>/dev/null)" != "$stamp" ]; then
    mkdir -p "$target"
    cc "$@" -I"$ggml/include" -I"$ggml/src" -I"$ggml/src/ggml-cpu" \
      scripts/ggml-reference/quantize.c "$ggml/src/ggml-quants.c" -lm -o "$target/$name.tmp"
    mv "$target/$name.tmp" "$target/$name"
    echo "$stamp" > "$target/$name.stamp"
  fi
}

build quantize "${flags[@]}"
build quantize-fma "${flags[@]/-ffp-contract=off/-ffp-contract=fast}" -mfma
if [ "${1:-}" = "--fused" ]; then
  shift
  exec "$target/quantize-fma" "$@"
fi
if [ "${1:-}" = "--check" ]; then
  # As a module from fixtures/, so fixturegen/numbers.py does not shadow the standard library's.
  cd fixtures
  exec "$root/.venv/peft/bin/python" -m fixturegen.ggml_reference --check \
    "$target/quantize" "$target/quantize-fma" "$root/fixtures/data/gguf_quantize/vectors.safetensors"
fi
if [ $# -ne 3 ]; then
  echo "usage: $0 Q4_K|Q5_K|Q6_K IN.f32 OUT.bin | $0 --check" >&2
  exit 64
fi
exec "$target/quantize" "$@"
