#!/usr/bin/env bash
# The whole test suite: Swift unit and CLI tests, then the checks judged by the real Python stack
# (PEFT and AdapterHub load what peftpack exports; the spec's independent reader reads its packs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
swift build --build-tests
swift test --skip-build
bash scripts/python-envs.sh
export PEFTPACK_BIN="$(swift build --show-bin-path)/peftpack"
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error TQDM_DISABLE=1 PYTHONWARNINGS=ignore
status=0
.venv/peft/bin/python spec/check_reader.py || status=1
.venv/peft/bin/python tests/python/check_peft_exports.py || status=1
.venv/peft/bin/python tests/python/check_generated_exports.py || status=1
.venv/peft/bin/python tests/python/check_tied_embeddings.py || status=1
.venv/peft/bin/python tests/python/check_checkpoint_buffers.py || status=1
.venv/peft/bin/python tests/python/check_module_layouts.py || status=1
.venv/peft/bin/python tests/python/check_base_binding.py || status=1
.venv/peft/bin/python tests/python/check_families.py || status=1
.venv/bnb/bin/python tests/python/check_quantized_bases.py || status=1
bash Fuzz/run.sh 10 || status=1
LLAMACPP_SRC="$(bash scripts/llamacpp-source.sh)" .venv/peft/bin/python tests/python/check_gguf_exports.py || status=1
.venv/peft/bin/python tests/python/check_gguf_merges.py || status=1
.venv/adapters/bin/python tests/python/check_adapterhub_exports.py || status=1
.venv/mlx/bin/python tests/python/check_mlx_adapters.py || status=1
.venv/mlx/bin/python tests/python/check_mlx_quantized.py || status=1
.venv/peft/bin/python tests/python/check_mlx_round_trip.py || status=1
.venv/peft/bin/python tests/python/check_convert.py || status=1
exit $status
