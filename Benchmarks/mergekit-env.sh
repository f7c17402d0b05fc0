#!/usr/bin/env bash
# .venv/mergekit: the anchor of the extract benchmark (mergekit-extract-lora), pinned in
# Benchmarks/requirements-mergekit.txt; rebuilt only when that file changes.
set -euo pipefail
cd "$(dirname "$0")/.."
requirements=Benchmarks/requirements-mergekit.txt
stamp=.venv/mergekit/.requirements.sha256
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ -x .venv/mergekit/bin/mergekit-extract-lora ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then exit 0; fi
echo "creating .venv/mergekit from $requirements"
rm -rf .venv/mergekit
python3 -m venv .venv/mergekit
PIP_FIND_LINKS=${PIP_FIND_LINKS:-/opt/wheels} .venv/mergekit/bin/pip install -q --disable-pip-version-check -r "$requirements"
echo "$want" > "$stamp"
