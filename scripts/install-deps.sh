#!/usr/bin/env bash
# Installs the C libraries peftpack links against (Debian/Ubuntu) and checks that pkg-config
# finds each one: SwiftPM only warns about a missing .pc file, and the build then fails obscurely.
set -euo pipefail
packages=(libzstd-dev libxxhash-dev libopenblas-dev liblapacke-dev pkg-config python3-venv)
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for module in libzstd libxxhash openblas lapacke; do
  if ! pkg-config --exists "$module"; then
    echo "error: pkg-config cannot find '$module' after installing ${packages[*]}" >&2
    exit 1
  fi
done
command -v swift >/dev/null || { echo "error: no Swift toolchain on PATH (Swift 6.0 or newer is needed)" >&2; exit 1; }
