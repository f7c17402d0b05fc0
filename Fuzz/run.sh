#!/usr/bin/env bash
# Fuzzes peftpack's parsers of untrusted input with libFuzzer + AddressSanitizer.
#   bash Fuzz/run.sh [SECONDS_PER_TARGET] [TARGET…]      (default: 30 s each, every target)
# Targets: pack (header + every chunk), safetensors (header + every tensor), pickle (torch.save
# zip + restricted unpickler), config (PEFT and AdapterHub adapter_config.json), gguf (header,
# metadata, tensors, LoRA mapping). The seed corpus is made from the fixtures; the working corpus
# and any crash reproducers go to .build-fuzz/ (crashes also to Fuzz/crashes/ to become
# regression inputs). Prints executions per target and exits non-zero if any target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(pack safetensors pickle config gguf)
# The seeds only need a working CLI: the debug build the tests already made will do.
swift build --product peftpack >/dev/null
peftpack="$(swift build --show-bin-path)/peftpack"
swift build -c release --product peftpack-fuzz --scratch-path .build-fuzz \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xcc -fsanitize=address >/dev/null
fuzzer=.build-fuzz/release/peftpack-fuzz
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
  find fixtures/data -name '*.safetensors' -size -64k | head -20 | while read -r file; do cp "$file" "$seeds/safetensors/$(echo "$file" | tr / _)"; done
  find fixtures/data -name '*.bin' -size -64k | while read -r file; do cp "$file" "$seeds/pickle/$(echo "$file" | tr / _)"; done
  find fixtures/data -name 'adapter_config.json' | while read -r file; do cp "$file" "$seeds/config/$(echo "$file" | tr / _)"; done
fi
mkdir -p Fuzz/crashes
status=0
for target in "${targets[@]}"; do
  corpus=.build-fuzz/corpus/$target
  mkdir -p "$corpus"
  log=.build-fuzz/$target.log
  if PEFTPACK_FUZZ_TARGET=$target "$fuzzer" "$corpus" "$seeds/$target" -max_total_time="$seconds" -timeout=10 \
       -rss_limit_mb=2048 -malloc_limit_mb=1024 -artifact_prefix="Fuzz/crashes/$target-" -print_final_stats=1 > "$log" 2>&1; then
    result=ok
  else
    result=CRASH
    status=1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  echo "$result $target: $runs executions in ${seconds}s"
  [ "$result" = ok ] || grep -m3 -E "ERROR|==[0-9]+==|Fatal" "$log" || true
done
exit $status
