"""CI check: the independent reader (peftpack_reader.py) reads every pack the Swift CLI makes from
the fixtures, agrees with Swift on every tensor (XXH3 of the decoded bytes, as `peftpack inspect
--hashes` reports them), finds LoRA/IA3 factors where §9 of FORMAT.md says they are and equal to
the PEFT file they came from, reads every adapter of a PEFT folder saved with several, computes the
base records of §9.2 itself, and rejects damaged packs."""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, str(Path(__file__).parent))
from peftpack_reader import Pack, PackError, xxh3  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CASES = REPO / "fixtures" / "data" / "cases"
# Adapters with trainable-token rows (full modules of mode "rows", §9.10).
ROW_CASES = [REPO / "fixtures" / "data" / "configs" / name for name in ("tokens_llama", "tokens_gpt2_tied")]
BASE_BINDING = REPO / "fixtures" / "data" / "base_binding"
MODELS = REPO / "fixtures" / "data" / "models"
BINARY = os.environ["PEFTPACK_BIN"]


def peftpack(*args):
    result = subprocess.run([BINARY, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"peftpack {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def peft_suffix(role, layout):
    embedding = layout == "embedding"
    return {"A": ".lora_embedding_A" if embedding else ".lora_A.weight",
            "B": ".lora_embedding_B" if embedding else ".lora_B.weight",
            "vector": ".ia3_l"}.get(role)


def check_case(case_dir: Path, work: Path):
    source = case_dir / "adapter" if (case_dir / "adapter").exists() else case_dir / "adapter_bin"
    pack_path = work / f"{case_dir.name}.peftpack"
    # The pack's tensors are what is read here; llama_pfeiffer's saved lm_head stays out of it.
    peftpack("import", str(source), "-o", str(pack_path), "--without-head")
    pack = Pack(str(pack_path))
    pack.verify()
    swift = json.loads(peftpack("inspect", str(pack_path), "--hashes", "--json"))
    hashes = {t["name"]: t["xxh3"] for t in swift["tensors"]}
    if set(hashes) != set(pack.names()):
        raise AssertionError("tensor names differ between Swift and the reader")
    for name in pack.names():
        if f"{xxh3(pack.read(name)):016x}" != hashes[name]:
            raise AssertionError(f"{name}: reader and Swift decode different bytes")
    if [a["name"] for a in swift["adapters"]] != [a["name"] for a in pack.document["adapters"]]:
        raise AssertionError("adapter lists differ")
    peft_file = source / "adapter_model.safetensors"
    if peft_file.exists():
        original = load_file(str(peft_file))
        for adapter in pack.document["adapters"]:
            if adapter["kind"] not in ("lora", "ia3"):
                continue
            for module in adapter["modules"]:
                if "mode" in module:
                    check_full_module(module, original, pack)
                    continue
                for role, tensor_name in module["tensors"].items():
                    suffix = peft_suffix(role, module.get("layout"))
                    if suffix is None:
                        continue
                    expected = original[f"base_model.model.{module['target']}{suffix}"]
                    ours = pack.array(tensor_name)
                    if ours.tobytes() != np.ascontiguousarray(expected).tobytes() or ours.size != expected.size:
                        raise AssertionError(f"{tensor_name} differs from the PEFT tensor")
    return pack_path


def check_full_module(module, original, pack):
    """A full module's value is the PEFT tensor it came from; a rows module's has a row per entry
    of `rows`, each as wide as the rows it replaces."""
    ours = pack.array(module["tensors"]["value"])
    if "source_name" in module:
        expected = original[module["source_name"]]
        if ours.tobytes() != np.ascontiguousarray(expected).tobytes():
            raise AssertionError(f"{module['target']} differs from the PEFT tensor {module['source_name']}")
    if module["mode"] == "rows":
        rows = module["rows"]
        if ours.ndim != 2 or ours.shape[0] != len(rows) or len(set(rows)) != len(rows):
            raise AssertionError(f"{module['target']}: value {ours.shape} does not hold one row per entry of rows {rows}")


def safetensors_entries(path: Path):
    """name -> (dtype, shape, raw bytes) of a safetensors file, read from its header as written."""
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    header.pop("__metadata__", None)
    start = 8 + length
    return {name: (entry["dtype"], entry["shape"], data[start + entry["data_offsets"][0]:start + entry["data_offsets"][1]])
            for name, entry in header.items()}


def targeted(document, names):
    """The base tensors the document's adapters target (§9.2), resolved against the base's names (§9.3)."""
    result = set()
    for adapter in document["adapters"]:
        for module in adapter["modules"]:
            if "mode" in module:
                wanted = module["target"]
            elif adapter["kind"] in ("lora", "ia3"):
                wanted = module["target"] + ".weight"
            else:
                continue
            candidates = [wanted] + [wanted[len(p):] for p in ("model.", "bert.", "transformer.") if wanted.startswith(p)] \
                + [p + wanted for p in ("model.", "bert.", "transformer.")]
            result.add(next(c for c in candidates if c in names))
    return result


def check_base_records(work: Path):
    """A PEFT save folder with three adapters, imported with --base: every adapter is in the pack
    with the factors of its own folder, and the base records are what §9.2 says of the base."""
    folder = BASE_BINDING / "multi" / "adapter"
    pack_path = work / "multi.peftpack"
    peftpack("import", str(folder), "-o", str(pack_path), "--base", str(MODELS / "llama-tiny"))
    pack = Pack(str(pack_path))
    pack.verify()
    if pack.minor < 1:
        raise AssertionError(f"a pack with per-tensor base records is format 1.{pack.minor}, not 1.1")
    document = pack.document
    names = [a["name"] for a in document["adapters"]]
    if names != ["default", "second", "third"]:
        raise AssertionError(f"adapters {names}, expected default, second, third")
    for adapter in document["adapters"]:
        source = folder if adapter["name"] == "default" else folder / adapter["name"]
        original = load_file(str(source / "adapter_model.safetensors"))
        for module in adapter["modules"]:
            for role, tensor_name in module["tensors"].items():
                expected = original[f"base_model.model.{module['target']}{peft_suffix(role, module.get('layout'))}"]
                if pack.array(tensor_name).tobytes() != np.ascontiguousarray(expected).tobytes():
                    raise AssertionError(f"{tensor_name} differs from {source}")
    base = safetensors_entries(MODELS / "llama-tiny" / "model.safetensors")
    wanted = targeted(document, set(base))
    records = document["base"]
    if set(records["tensors"]) != wanted or set(records["content_hashes"]) != wanted:
        raise AssertionError("base records do not cover exactly the targeted tensors")
    for name in wanted:
        dtype, shape, raw = base[name]
        if records["tensors"][name] != {"dtype": dtype, "shape": shape}:
            raise AssertionError(f"{name}: recorded {records['tensors'][name]}, base has {dtype} {shape}")
        if _hex_value(records["content_hashes"][name]) != xxh3(raw):
            raise AssertionError(f"{name}: content hash differs from the base's bytes")
    listing = "".join(f"{n}\t{base[n][0]}\t[{','.join(str(d) for d in base[n][1])}]\n" for n in sorted(wanted))
    if _hex_value(records["fingerprint"]) != xxh3(listing.encode()):
        raise AssertionError("fingerprint differs from the listing of the targeted tensors")


def _hex_value(text):
    if len(text) != 16 or text != text.lower():
        raise AssertionError(f"{text!r} is not 16 lowercase hex digits")
    return int(text, 16)


def check_damage(pack_path: Path, work: Path):
    data = pack_path.read_bytes()
    damaged = work / "damaged.peftpack"
    rejected = 0
    positions = list(range(0, len(data), max(1, len(data) // 300)))
    for position in positions:
        copy = bytearray(data)
        copy[position] ^= 0x5A
        damaged.write_bytes(bytes(copy))
        try:
            pack = Pack(str(damaged))
            pack.verify()
            if any(pack.read(n) != Pack(str(pack_path)).read(n) for n in pack.names()):
                raise AssertionError(f"flip at {position} changed data silently")
        except PackError:
            rejected += 1
    for length in range(0, len(data), max(1, len(data) // 100)):
        damaged.write_bytes(data[:length])
        try:
            Pack(str(damaged)).verify()
            raise AssertionError(f"truncation to {length} accepted")
        except PackError:
            pass
    if rejected < len(positions) * 0.9:
        raise AssertionError(f"only {rejected} of {len(positions)} flips detected")


def main():
    work = Path(tempfile.mkdtemp(prefix="peftpack-spec-"))
    passed = failed = 0
    last_pack = None
    for case_dir in sorted(CASES.iterdir()) + ROW_CASES:
        try:
            last_pack = check_case(case_dir, work)
            passed += 1
            print(f"ok   spec reader: {case_dir.name}")
        except Exception as error:
            failed += 1
            print(f"FAIL spec reader: {case_dir.name}: {error}")
    try:
        check_base_records(work)
        passed += 1
        print("ok   spec reader: several adapters of one PEFT folder, base records")
    except Exception as error:
        failed += 1
        print(f"FAIL spec reader: several adapters of one PEFT folder, base records: {error}")
    try:
        check_damage(last_pack, work)
        passed += 1
        print("ok   spec reader: damaged packs rejected")
    except Exception as error:
        failed += 1
        print(f"FAIL spec reader: damaged packs: {error}")
    transforms = {chunk["transform"] for path in work.glob("*.peftpack") if path.name != "damaged.peftpack"
                  for entry in Pack(str(path)).entries.values() for chunk in entry["chunks"]}
    if transforms != {"none", "planes"}:
        failed += 1
        print(f"FAIL spec reader: the packs exercised only {sorted(transforms)}")
    print(f"python: {passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
