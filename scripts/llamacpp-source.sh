#!/usr/bin/env bash
# Fetches llama.cpp's source as the llama-cpp-python 0.3.36 source distribution on PyPI carries it
# (convert_hf_to_gguf.py, convert_lora_to_gguf.py, gguf-py and the C++ runtime), checks its SHA-256
# and unpacks it into .venv/llama.cpp (inside the clone, like the venvs). Prints the llama.cpp path.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.3.36
sha256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
url="https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-$version.tar.gz"
target=.venv/llama.cpp
if [ ! -f "$target/.sha256" ] || [ "$(cat "$target/.sha256")" != "$sha256" ]; then
  rm -rf "$target" && mkdir -p "$target"
  archive="$target/llama_cpp_python-$version.tar.gz"
  curl -sSfL --retry 3 -o "$archive" "$url"
  echo "$sha256  $archive" | sha256sum -c --quiet
  tar xzf "$archive" -C "$target"
  echo "$sha256" > "$target/.sha256"
fi
echo "$PWD/$target/llama_cpp_python-$version/vendor/llama.cpp"
