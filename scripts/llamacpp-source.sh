#!/usr/bin/env bash
# Fetches llama.cpp's source as the llama-cpp-python 0.3.36 source distribution carries it
# (convert_hf_to_gguf.py, convert_lora_to_gguf.py, gguf-py and the C++ runtime), checks its SHA-256
# and unpacks it into .venv/llama.cpp (inside the clone, like the venvs). Prints the llama.cpp path.
#
# The archive comes through pip, so whatever index pip is configured with (pip.conf, PIP_INDEX_URL,
# a mirror or a proxy) is the one used. Only llama-cpp-python itself is asked for as source:
# `--no-binary :all:` would also force its build backend's dependencies (cmake among them) to be
# compiled from source just to read the package's metadata, which took over ten minutes here.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.3.36
sha256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
target=.venv/llama.cpp
if [ -x .venv/peft/bin/python ]; then python=.venv/peft/bin/python; else python=python3; fi
if [ ! -f "$target/.sha256" ] || [ "$(cat "$target/.sha256")" != "$sha256" ]; then
  rm -rf "$target" && mkdir -p "$target"
  archive="$target/llama_cpp_python-$version.tar.gz"
  if ! log=$("$python" -m pip download --quiet --disable-pip-version-check --no-deps \
      --no-binary llama-cpp-python "llama-cpp-python==$version" -d "$target" 2>&1); then
    printf '%s\n' "$log" >&2
    echo "llamacpp-source: pip could not download llama-cpp-python==$version from its configured index" >&2
    rm -rf "$target"
    exit 2
  fi
  if [ ! -f "$archive" ]; then
    echo "llamacpp-source: pip did not produce $archive (got: $(ls "$target"))" >&2
    rm -rf "$target"
    exit 2
  fi
  if ! echo "$sha256  $archive" | sha256sum -c --quiet; then
    echo "llamacpp-source: $archive does not have the pinned SHA-256 $sha256" >&2
    rm -rf "$target"
    exit 2
  fi
  tar xzf "$archive" -C "$target"
  echo "$sha256" > "$target/.sha256"
fi
echo "$PWD/$target/llama_cpp_python-$version/vendor/llama.cpp"
