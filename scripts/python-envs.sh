#!/usr/bin/env bash
# Creates the Python environments inside the clone (nothing is cached outside it):
#   .venv/peft      torch (CPU) + transformers 5 + peft: the PEFT reference and the spec reader
#   .venv/adapters  torch (CPU) + transformers 4.57 + adapters: AdapterHub pins an older transformers
#   .venv/bnb       the peft venv + bitsandbytes 0.50: quantized bases (4-bit NF4/FP4, LLM.int8)
#   .venv/mlx       mlx[cpu] 0.32 + mlx-lm 0.32 (no torch): the MLX adapter checks
# Each is rebuilt only when its requirements file changed.
set -euo pipefail
cd "$(dirname "$0")/.."
make_env() {
  local name=$1 requirements=$2
  local stamp=".venv/$name/.requirements.sha256"
  local want
  want=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [ -x ".venv/$name/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return
  fi
  echo "creating .venv/$name from $requirements"
  rm -rf ".venv/$name"
  python3 -m venv ".venv/$name"
  ".venv/$name/bin/pip" install -q --disable-pip-version-check -r "$requirements"
  echo "$want" > "$stamp"
}
make_env peft fixtures/requirements.txt
make_env adapters fixtures/requirements-adapterhub.txt
make_env bnb fixtures/requirements-bnb.txt
make_env mlx fixtures/requirements-mlx.txt
