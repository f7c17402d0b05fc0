#!/usr/bin/env bash
# The main job on the bundled fixtures: pack a real PEFT adapter, inspect it, and more as the
# subcommands land.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
swift build -c release --product peftpack
bin="$(swift build -c release --show-bin-path)/peftpack"
"$bin" --version
