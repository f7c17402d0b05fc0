#!/usr/bin/env bash
# Fuzzes peftpack's parsers of untrusted input with libFuzzer + AddressSanitizer.
#   bash Fuzz/run.sh [SECONDS_PER_TARGET] [TARGET…]      (default: 30 s each, every target)
# Targets: pack (header + every chunk), pack-structure (the same reader on a pack taken apart, with
# the preamble and header checksums recomputed and chunk checksums skipped, so mutations reach the
# index parser and the decoders), safetensors (header + every tensor), pickle (torch.save
# zip + restricted unpickler), config (PEFT and AdapterHub adapter_config.json), gguf (header,
# metadata, tensors, LoRA mapping, model as a base), bnb (a bitsandbytes-quantized checkpoint: quant states,
# companions, dequantization). The seed corpus is made from the fixtures; the working corpus
# goes to .build-fuzz/, crash, leak, timeout and slow-unit reproducers to Fuzz/crashes/ (ignored
# by git: a real one becomes a regression input in Tests/PeftPackTests/Malformed/ or a test). A
# slow unit is one that took over 10 s; on a busy machine with FUZZ_NICE that can be the nice
# level, so replay it alone (peftpack-fuzz TARGET FILE) before calling it a hang. Prints
# executions per target and exits non-zero if any target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(pack pack-structure safetensors pickle config gguf bnb)
# A build's output is shown only when it fails: with set -e a failed build would otherwise end
# the script with a bare exit status.
quiet_build() {
  local log
  log=$(mktemp)
  if ! swift build "$@" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "Fuzz/run.sh: swift build $* failed" >&2
    exit 1
  fi
  rm -f "$log"
}
# The seeds only need a working CLI: the debug build the tests already made will do.
quiet_build --product peftpack
quiet_build --product peftpack-fuzz
peftpack="$(swift build --show-bin-path)/peftpack"
replayer="$(swift build --show-bin-path)/peftpack-fuzz"
quiet_build -c release --product peftpack-fuzz --scratch-path .build-fuzz \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xcc -fsanitize=address
# A private copy, so a rebuild during a long campaign does not replace the binary under it.
fuzzer=.build-fuzz/peftpack-fuzz-$$
cp .build-fuzz/release/peftpack-fuzz "$fuzzer"
trap 'rm -f "$fuzzer"' EXIT
seeds=.build-fuzz/seeds
if [ ! -d "$seeds/pack" ]; then
  rm -rf "$seeds"
  mkdir -p "$seeds"/{pack,safetensors,pickle,config,gguf}
  for case in llama_lora llama_prefix llama_ia3; do
    "$peftpack" import "fixtures/data/cases/$case/adapter" -o "$seeds/pack/$case.peftpack" --base fixtures/data/models/llama-tiny >/dev/null
  done
  "$peftpack" import fixtures/data/cases/bert_houlsby/adapter_bin -o "$seeds/pack/bert_houlsby.peftpack" >/dev/null
  "$peftpack" export "$seeds/pack/llama_lora.peftpack" -o "$seeds/gguf/llama_lora.gguf" --format gguf >/dev/null
  "$peftpack" export "$seeds/pack/llama_lora.peftpack" -o "$seeds/gguf/llama_lora_q8.gguf" --format gguf --dtype q8_0 >/dev/null
  # Not `find | head`: under pipefail, find dies of SIGPIPE once head has its 20 and the script stops.
  mapfile -t small < <(find fixtures/data -name '*.safetensors' -size -64k | sort)
  for file in "${small[@]:0:20}"; do cp "$file" "$seeds/safetensors/$(echo "$file" | tr / _)"; done
  find fixtures/data -name '*.bin' -size -64k | while read -r file; do cp "$file" "$seeds/pickle/$(echo "$file" | tr / _)"; done
  find fixtures/data -name 'adapter_config.json' | while read -r file; do cp "$file" "$seeds/config/$(echo "$file" | tr / _)"; done
fi
if [ ! -d "$seeds/pack-structure" ]; then
  mkdir -p "$seeds/pack-structure"
  for pack in "$seeds"/pack/*.peftpack; do "$replayer" disassemble-pack "$pack" "$seeds/pack-structure/$(basename "$pack" .peftpack).parts"; done
fi
if [ ! -d "$seeds/bnb" ]; then
  mkdir -p "$seeds/bnb"
  for model in nf4 fp4 int8; do cp "fixtures/data/bnb/llama-tiny-$model/model.safetensors" "$seeds/bnb/llama-tiny-$model.safetensors"; done
fi
mkdir -p Fuzz/crashes
# FUZZ_JOBS targets run at once (default 1); FUZZ_NICE lowers their priority so other work on the
# machine keeps its speed (a campaign is bounded by time, not executions).
jobs=${FUZZ_JOBS:-1}
fuzz_one() {
  local target=$1 corpus=.build-fuzz/corpus/$1 log=.build-fuzz/$1.log result runs
  mkdir -p "$corpus"
  if PEFTPACK_FUZZ_TARGET=$target nice -n "${FUZZ_NICE:-0}" "$fuzzer" "$corpus" "$seeds/$target" -max_total_time="$seconds" -timeout=10 \
       -rss_limit_mb=2048 -malloc_limit_mb=1024 -artifact_prefix="Fuzz/crashes/$target-" -print_final_stats=1 > "$log" 2>&1; then
    result=ok
  else
    result=CRASH
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  echo "$result $target: $runs executions in ${seconds}s"
  [ "$result" = ok ] || { grep -m3 -E "ERROR|==[0-9]+==|Fatal" "$log" || true; return 1; }
}
status=0
pids=()
for target in "${targets[@]}"; do
  fuzz_one "$target" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$jobs" ]; then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}")
  fi
done
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
