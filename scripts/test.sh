#!/usr/bin/env bash
# The whole test suite: Swift unit and CLI tests, then the Python checks that need the real stack.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
swift build --build-tests
swift test --skip-build
