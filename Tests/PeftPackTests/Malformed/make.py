"""Builds the malformed-input corpus in this folder from the fixtures (stdlib only; run from the
repository root: python3 Tests/PeftPackTests/Malformed/make.py). cases.json lists, per input, the
peftpack command to run on it and a fragment of the one-line error it must print; every case must
exit 2 and leave no output behind (MalformedCorpusTests)."""
import json
import shutil
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[2] / "fixtures" / "data"
CORPUS = HERE / "inputs"
cases = []


def case(name, command, expect):
    cases.append({"name": name, "command": command, "expect": expect})


def write(name, data):
    path = CORPUS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return name


def peft_folder(name, config=None, weights=None, source="llama_lora"):
    folder = CORPUS / name
    folder.mkdir(parents=True, exist_ok=True)
    original = DATA / "cases" / source / "adapter"
    (folder / "adapter_config.json").write_text(config if config is not None else (original / "adapter_config.json").read_text())
    if weights is not False:
        (folder / "adapter_model.safetensors").write_bytes(weights if weights is not None else (original / "adapter_model.safetensors").read_bytes())
    return name


shutil.rmtree(CORPUS, ignore_errors=True)
CORPUS.mkdir()
IMPORT = ["import", "{input}", "-o", "{output}"]
INSPECT = ["inspect", "{input}"]

# safetensors (inspect reads the header and index)
good = (DATA / "cases" / "llama_prompt_tuning" / "adapter" / "adapter_model.safetensors").read_bytes()
header_length = struct.unpack("<Q", good[:8])[0]
header = good[8 : 8 + header_length]
case(write("st_empty.safetensors", b""), INSPECT, "too short")
case(write("st_short_length.safetensors", good[:5]), INSPECT, "too short")
case(write("st_huge_header.safetensors", struct.pack("<Q", 100 << 30) + good[8:]), INSPECT, "header")
case(write("st_header_past_end.safetensors", struct.pack("<Q", len(good)) + good[8:]), INSPECT, "header")
case(write("st_not_json.safetensors", struct.pack("<Q", 8) + b"notjson!" ), INSPECT, "JSON")
case(write("st_truncated_data.safetensors", good[:-7]), INSPECT, "")
bad_header = header.replace(b'"F32"', b'"F99"', 1)
case(write("st_unknown_dtype.safetensors", struct.pack("<Q", len(bad_header)) + bad_header + good[8 + header_length :]), INSPECT, "F99")
dup = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
case(write("st_duplicate_key.safetensors", struct.pack("<Q", len(dup)) + dup + b"\0" * 4), INSPECT, 'duplicate key "a"')
overlap = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'
case(write("st_overlap.safetensors", struct.pack("<Q", len(overlap)) + overlap + b"\0" * 8), INSPECT, "")
wrong = b'{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}'
case(write("st_shape_vs_bytes.safetensors", struct.pack("<Q", len(wrong)) + wrong + b"\0" * 8), INSPECT, "is 12 bytes but data_offsets span 8")
negative = b'{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}'
case(write("st_negative_dim.safetensors", struct.pack("<Q", len(negative)) + negative + b"\0" * 4), INSPECT, "non-negative integers")
deep = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
case(write("st_deep_nesting.safetensors", struct.pack("<Q", len(deep)) + deep), INSPECT, "nesting deeper than 64")

# packs (made from a fixture by the CLI given as PEFTPACK_BIN, then damaged)
import os
import subprocess
binary = os.environ["PEFTPACK_BIN"]
made = CORPUS / "_good.peftpack"
subprocess.run([binary, "import", str(DATA / "cases" / "llama_prompt_tuning" / "adapter"), "-o", str(made)], check=True, capture_output=True)
good_pack = made.read_bytes()
made.unlink()
def damaged(data, offset, value):
    data = bytearray(data)
    data[offset] ^= value
    return bytes(data)
case(write("pack_bad_magic.peftpack", damaged(good_pack, 1, 0xFF)), INSPECT, "")
case(write("pack_truncated_preamble.peftpack", good_pack[:40]), INSPECT, "")
case(write("pack_truncated_end.peftpack", good_pack[:-1]), INSPECT, "")
case(write("pack_preamble_checksum.peftpack", damaged(good_pack, 17, 0x01)), INSPECT, "")
case(write("pack_header_flip.peftpack", damaged(good_pack, len(good_pack) - 3, 0x10)), INSPECT, "")
case(write("pack_chunk_flip.peftpack", damaged(good_pack, 70, 0x04)), ["inspect", "{input}", "--verify"], "")
case(write("pack_major_version.peftpack", damaged(good_pack, 8, 0x07)), INSPECT, "")

# PEFT folders
lora_config = json.loads((DATA / "cases" / "llama_lora" / "adapter" / "adapter_config.json").read_text())
def config(**changes):
    value = dict(lora_config)
    value.update(changes)
    return json.dumps(value)
case(peft_folder("peft_bad_json", config="{not json"), IMPORT, "adapter_config.json")
case(peft_folder("peft_duplicate_key", config='{"peft_type": "LORA", "peft_type": "IA3"}'), IMPORT, "peft_type")
case(peft_folder("peft_unknown_type", config=config(peft_type="SUPERLORA")), IMPORT, "SUPERLORA")
case(peft_folder("peft_rank_zero", config=config(r=0)), IMPORT, "")
case(peft_folder("peft_no_weights", weights=False), IMPORT, "adapter_model")
case(peft_folder("peft_weights_not_safetensors", weights=b"hello world, not a tensor file"), IMPORT, "adapter_model.safetensors")
case(peft_folder("peft_config_is_array", config="[1, 2, 3]"), IMPORT, "adapter_config.json")
case(peft_folder("peft_deep_nesting", config='{"peft_type": ' + "[" * 100_000 + "]" * 100_000 + "}"), IMPORT, "nesting deeper than 64")
case(peft_folder("peft_wrong_base_shapes"), ["import", "{input}", "-o", "{output}", "--base", "{fixtures}/models/gpt2-tiny"], "")
case(peft_folder("peft_prompt_wrong_tokens", config=json.dumps({**json.loads((DATA / "cases" / "llama_prompt_tuning" / "adapter" / "adapter_config.json").read_text()), "num_virtual_tokens": 99}), source="llama_prompt_tuning"), IMPORT, "num_virtual_tokens")

# AdapterHub folders
def adapterhub_folder(name, config_text):
    folder = CORPUS / name
    shutil.copytree(DATA / "cases" / "bert_houlsby" / "adapter_safetensors", folder)
    (folder / "adapter_config.json").write_text(config_text)
    return name
hub = json.loads((DATA / "cases" / "bert_houlsby" / "adapter_safetensors" / "adapter_config.json").read_text())
case(adapterhub_folder("hub_config_not_object", json.dumps({**hub, "config": "houlsby"})), IMPORT, "")

# torch.save pickles that reference forbidden globals or are broken, as adapter_model.bin
for hostile in sorted((DATA / "malicious").glob("*.bin")):
    if hostile.name == "valid_tiny.bin":
        continue
    folder = CORPUS / f"pickle_{hostile.stem}"
    folder.mkdir()
    (folder / "adapter_config.json").write_text((DATA / "cases" / "llama_lora" / "adapter" / "adapter_config.json").read_text())
    shutil.copy(hostile, folder / "adapter_model.bin")
    case(f"pickle_{hostile.stem}", IMPORT, "")
for name, data in [("pickle_truncated_zip", (DATA / "malicious" / "valid_tiny.bin").read_bytes()[:300]), ("pickle_not_zip", b"\x80\x02}q\x00.")]:
    folder = CORPUS / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text((DATA / "cases" / "llama_lora" / "adapter" / "adapter_config.json").read_text())
    (folder / "adapter_model.bin").write_bytes(data)
    case(name, IMPORT, "adapter_model.bin")

# Hand-made pickles in a torch.save zip that try to exhaust the reader rather than run code: the
# nesting that used to overflow the stack when the value was torn down, a list put inside itself,
# a dict changed after being nested, and one 64 KB storage rebuilt into 10,000 tensors (650 MB of
# copies from a 200 KB file).
import zipfile
def torch_zip(name, code, storages=()):
    folder = CORPUS / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text((DATA / "cases" / "llama_lora" / "adapter" / "adapter_config.json").read_text())
    with zipfile.ZipFile(folder / "adapter_model.bin", "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", code)
        for key, data in storages:
            archive.writestr(f"archive/data/{key}", data)
        archive.writestr("archive/version", "3\n")
    return name
def unicode(text):
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw
DEPTH = 100_000
case(torch_zip("pickle_deep_lists", b"\x80\x02" + b"]" * DEPTH + b"a" * (DEPTH - 1) + b"."), IMPORT, "nested deeper than 32 levels")
case(torch_zip("pickle_deep_tuples", b"\x80\x02)" + b"\x85" * DEPTH + b"."), IMPORT, "nested deeper than 32 levels")
case(torch_zip("pickle_list_in_itself", b"\x80\x02]q\x00h\x00a."), IMPORT, "a list is put inside itself")
case(torch_zip("pickle_dict_changed_after_nesting", b"\x80\x02}q\x00h\x00\x85h\x00" + unicode("k") + b"Ns."), IMPORT, "a dict is changed after being put inside another value")
elements = 16384
rebuild = (b"ctorch._utils\n_rebuild_tensor_v2\nq\x00"
           + b"(" + b"(" + unicode("storage") + b"ctorch\nFloatStorage\n" + unicode("0") + unicode("cpu") + b"M" + struct.pack("<H", elements) + b"tQ"
           + b"K\x00" + b"M" + struct.pack("<H", elements) + b"\x85" + b"K\x01\x85" + b"tq\x01")
tensors = b"".join(unicode(f"t{index}") + b"h\x00h\x01R" for index in range(10_000))
code = b"\x80\x02}(" + unicode("first") + rebuild + b"R" + tensors + b"u."
case(torch_zip("pickle_storage_amplified", code, [("0", b"\0" * (4 * elements))]), IMPORT, "more than 4× the")

# GGUF
gguf_head = b"GGUF" + struct.pack("<IQQ", 3, 0, 0)
case(write("gguf_no_adapter.gguf", gguf_head), IMPORT, "not a LoRA adapter")
case(write("gguf_version.gguf", b"GGUF" + struct.pack("<IQQ", 9, 0, 0)), IMPORT, "version 9")
case(write("gguf_truncated.gguf", b"GGUF" + struct.pack("<I", 3)), IMPORT, "truncated")
case(write("gguf_huge_count.gguf", b"GGUF" + struct.pack("<IQQ", 3, 1 << 60, 0)), IMPORT, "more than the file could hold")
case(write("gguf_huge_string.gguf", b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 1 << 50)), IMPORT, "past the end")


def gguf_tensors(tensors):
    """A GGUF with no metadata and (name, dims innermost first, ggml type, data offset) tensors, 32 zero bytes of data each."""
    index = b"".join(struct.pack("<Q", len(name)) + name.encode() + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
                     + struct.pack("<IQ", qtype, offset) for name, dims, qtype, offset in tensors)
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), 0) + index
    return header + b"\0" * (-len(header) % 32) + b"\0" * (32 * len(tensors))


case(write("gguf_q2_k.gguf", gguf_tensors([("w", [256], 10, 0)])), IMPORT, "Q2_K (ggml type 10), which peftpack does not read")
case(write("gguf_q4_0_size.gguf", gguf_tensors([("w", [32, 2], 2, 0), ("v", [8], 0, 32)])), IMPORT, "tensor w: is Q4_0 of shape [2, 32], which takes 36 bytes")
case(write("gguf_q4_k_rows.gguf", gguf_tensors([("w", [128], 12, 0)])), IMPORT, "not whole Q4_K blocks of 256")

# commands given inputs that do not fit
case(write("not_a_pack.peftpack", b"just some text\n"), ["merge", "--base", "{fixtures}/models/llama-tiny", "{input}", "-o", "{output}"], "")
case(write("text.peftpack", b"\x89PEFTPK\n"), ["stack", "{input}", "-o", "{output}"], "")
case(write("empty.peftpack", b""), ["export", "{input}", "-o", "{output}"], "")
case(write("text_for_verify.peftpack", b"nope"), ["verify", "{input}", "--base", "{fixtures}/models/llama-tiny", "--merged", "{fixtures}/models/llama-tiny"], "")
VERIFY_SELF = ["verify", "{input}", "--base", "{fixtures}/models/llama-tiny", "--against", "{input}"]
case(write("verify_huge_input.peftpack", good_pack), VERIFY_SELF + ["--input-ids", "1000000,1000000"], "GB of activations")
case(write("verify_huge_batch.peftpack", good_pack), VERIFY_SELF + ["--input-ids", "100000,64"], "GB of activations")
case(write("unused.txt", b"x"), ["extract", "--base", "{fixtures}/models/llama-tiny", "--finetuned", "{fixtures}/models/bert-tiny", "-o", "{output}"], "not the same architecture")
case(write("unused2.txt", b"x"), ["extract", "--base", "{fixtures}/models/llama-tiny", "--finetuned", "{fixtures}/models/llama-tiny", "-o", "{output}"], "nothing to extract")

# numbers: NaN/Inf in adapter tensors (fixtures/data/numbers, written by torch), non-finite weights,
# a merge with nothing left to merge
def copy_folder(name, source):
    shutil.copytree(DATA / source, CORPUS / name)
    return name
case(copy_folder("numbers_nan_factor", "numbers/nan_lora"), IMPORT, "q_proj/A holds 3 NaN of its 512 elements")
case(copy_folder("numbers_inf_factor", "numbers/inf_lora"), IMPORT, "down_proj/B holds 2 ±Inf of its 512 elements")
made = CORPUS / "_finite.peftpack"
subprocess.run([binary, "import", str(DATA / "numbers" / "adapter"), "-o", str(made)], check=True, capture_output=True)
finite_pack = made.read_bytes()
made.unlink()
MERGE_BF16 = ["merge", "--base", "{fixtures}/models/llama-tiny-bf16", "{input}", "-o", "{output}"]
case(write("numbers_weight_nan.peftpack", finite_pack), MERGE_BF16 + ["--weight", "nan"], "--weight nan is not a finite number")
case(write("numbers_weight_inf.peftpack", finite_pack), ["stack", "{input}", "--weight", "inf", "-o", "{output}"], "--weight inf is not a finite number")
subprocess.run([binary, "import", str(DATA / "numbers" / "inf_lora"), "-o", str(made), "--allow-nonfinite"], check=True, capture_output=True)
case(write("numbers_kept_inf.peftpack", made.read_bytes()), MERGE_BF16, "merged tensor model.layers.1.mlp.down_proj.weight would hold")
made.unlink()
case(write("numbers_prefix_only.peftpack", good_pack), ["merge", "--base", "{fixtures}/models/llama-tiny", "{input}", "--skip-unmergeable", "-o", "{output}"], "nothing to merge")
# tied embeddings: a fine-tune saved untied (its own lm_head.weight, tie_word_embeddings false)
# of a base whose head is its embedding: extract must name the tie, not call it another architecture
def untied_copy(source, name):
    folder = CORPUS / name
    folder.mkdir(parents=True, exist_ok=True)
    raw = (source / "model.safetensors").read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + length])
    data = raw[8 + length :]
    start, end = header["model.embed_tokens.weight"]["data_offsets"]
    header["lm_head.weight"] = {**header["model.embed_tokens.weight"], "data_offsets": [len(data), len(data) + end - start]}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + data + data[start:end])
    config = json.loads((source / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return name


case(untied_copy(DATA / "tied" / "models" / "qwen2-tied-tiny-ft", "tied_untied_finetune"),
     ["extract", "--base", "{fixtures}/tied/models/qwen2-tied-tiny", "--finetuned", "{input}", "-o", "{output}"],
     "but the base")
# Configs read as PEFT reads them (issue 16): saved tensors PEFT would not load, trainable-token rows
# that do not fit their config, AdapterHub methods other than bottlenecks, and a GGUF export for an
# architecture it has no mapping for.
case(peft_folder("configs_outside_target_modules", config=config(target_modules=["q_proj"])), IMPORT, "PEFT would not load it: model.layers.0.mlp.down_proj is not matched by target_modules [q_proj]")
case(peft_folder("configs_regex_misses", config=config(target_modules=r".*\.(q_proj|k_proj|v_proj|o_proj)")), IMPORT, "is not matched by target_modules")
case(peft_folder("configs_excluded", config=config(exclude_modules=["k_proj"])), IMPORT, "is excluded by exclude_modules entry \"k_proj\"")
case(peft_folder("configs_layers_to_transform", config=config(layers_to_transform=[1])), IMPORT, "is in layer 0, not in layers_to_transform [1]")
case(peft_folder("configs_in_modules_to_save", config=config(modules_to_save=["gate_proj"])), IMPORT, "lies in modules_to_save entry \"gate_proj\"")
case(peft_folder("configs_bad_regex", config=config(target_modules="(unclosed")), IMPORT, "is not a regular expression")
case(peft_folder("configs_target_parameters", config=config(target_parameters=["mlp.experts.gate_up_proj"])), IMPORT, "target_parameters")
tokens_config = json.loads((DATA / "configs" / "tokens_llama" / "adapter" / "adapter_config.json").read_text())
def tokens(name, **changes):
    return peft_folder(name, config=json.dumps({**tokens_config, **changes}), source="../configs/tokens_llama")
case(tokens("configs_tokens_no_indices", trainable_token_indices=None), IMPORT, "adapter_config.json has no trainable_token_indices")
case(tokens("configs_tokens_wrong_count", trainable_token_indices={"embed_tokens": [25, 142], "lm_head": [5, 142]}), IMPORT, "trainable_token_indices gives model.embed_tokens 2 rows")
case(tokens("configs_tokens_repeated", trainable_token_indices={"embed_tokens": [25, 25, 200], "lm_head": [5, 142]}), IMPORT, "names a token id twice")
case(tokens("configs_tokens_unsaved_entry", trainable_token_indices={"embed_tokens": [25, 142, 200], "lm_head": [5, 142], "norm": [1]}), IMPORT, "trainable_token_indices names norm but the file holds no")
case(tokens("configs_tokens_past_vocabulary", trainable_token_indices={"embed_tokens": [25, 142, 256], "lm_head": [5, 142]}), IMPORT + ["--base", "{fixtures}/models/llama-tiny"], "replaces row 256 of model.embed_tokens.weight, but the base's")
for method, label in [("lora", "LoRA"), ("ia3", "IA3"), ("prefix", "prefix tuning")]:
    shutil.copytree(DATA / "configs" / f"adapterhub_{method}" / "adapter", CORPUS / f"configs_hub_{method}")
    case(f"configs_hub_{method}", IMPORT, f"AdapterHub {label} adapters are not supported yet; peftpack reads AdapterHub bottleneck adapters")
bert_pack = CORPUS / "configs_gguf_bert.peftpack"
subprocess.run([binary, "import", str(DATA / "cases" / "bert_lora_bias" / "adapter"), "-o", str(bert_pack), "--base", str(DATA / "models" / "bert-tiny")], check=True, capture_output=True)
case("configs_gguf_bert.peftpack", ["export", "{input}", "-o", "{output}", "--format", "gguf"], "is for a BertModel, model_type bert base, which GGUF export does not support")
# output handling: an existing output without --force, for every writing command and kind of
# output (the existing output sits in the case's input folder, so the harness checks that it is
# left as it was), and a destination under a regular file (ENOTDIR: refuses root too)
lora_pack = CORPUS / "_lora.peftpack"
subprocess.run([binary, "import", str(DATA / "cases" / "llama_lora" / "adapter"), "-o", str(lora_pack), "--base", str(DATA / "models" / "llama-tiny")],
               check=True, capture_output=True)
def existing_output(name):
    folder = CORPUS / name
    folder.mkdir()
    shutil.copy(lora_pack, folder / "lora.peftpack")
    (folder / "existing.peftpack").write_bytes(b"an earlier output, not to be replaced\n")
    (folder / "existing.gguf").write_bytes(b"an earlier output, not to be replaced\n")
    (folder / "existing_folder").mkdir()
    (folder / "existing_folder" / "keep.txt").write_text("an earlier output, not to be replaced\n")
    return name
EXISTS = "already exists; pass --force to replace it"
LLAMA = "{fixtures}/models/llama-tiny"
EXTRACT = ["extract", "--base", LLAMA, "--finetuned", "{fixtures}/models/llama-tiny-ft", "--rank", "2"]
case(existing_output("exists_import"), ["import", "{fixtures}/cases/llama_lora/adapter", "-o", "{input}/existing.peftpack"], EXISTS)
case(existing_output("exists_extract"), EXTRACT + ["-o", "{input}/existing.peftpack"], EXISTS)
case(existing_output("exists_stack"), ["stack", "{input}/lora.peftpack", "-o", "{input}/existing.peftpack"], EXISTS)
case(existing_output("exists_merge"), ["merge", "--base", LLAMA, "{input}/lora.peftpack", "-o", "{input}/existing_folder"], EXISTS)
case(existing_output("exists_export"), ["export", "{input}/lora.peftpack", "-o", "{input}/existing_folder"], EXISTS)
case(existing_output("exists_export_gguf"), ["export", "{input}/lora.peftpack", "-o", "{input}/existing.gguf"], EXISTS)
case(existing_output("exists_file_for_folder"), ["merge", "--base", LLAMA, "{input}/lora.peftpack", "-o", "{input}/existing.peftpack", "--force"], "is a file")
case(existing_output("exists_folder_for_file"), ["import", "{fixtures}/cases/llama_lora/adapter", "-o", "{input}/existing_folder", "--force"], "is a folder")
NOT_A_FOLDER = "cannot create files in"
case(write("under_file_import.txt", b"a regular file\n"), ["import", "{fixtures}/cases/llama_lora/adapter", "-o", "{input}/out.peftpack"], NOT_A_FOLDER)
case(write("under_file_extract.txt", b"a regular file\n"), EXTRACT + ["-o", "{input}/out.peftpack"], NOT_A_FOLDER)
case(existing_output("under_file_stack"), ["stack", "{input}/lora.peftpack", "-o", "{input}/existing.peftpack/out.peftpack"], NOT_A_FOLDER)
case(existing_output("under_file_merge"), ["merge", "--base", LLAMA, "{input}/lora.peftpack", "-o", "{input}/existing.peftpack/merged"], NOT_A_FOLDER)
case(existing_output("under_file_merge_sharded"), ["merge", "--base", LLAMA, "{input}/lora.peftpack", "-o", "{input}/existing.peftpack/merged", "--max-shard-size", "100KB"], NOT_A_FOLDER)
case(existing_output("under_file_export"), ["export", "{input}/lora.peftpack", "-o", "{input}/existing.peftpack/exported"], NOT_A_FOLDER)
case(existing_output("under_file_export_gguf"), ["export", "{input}/lora.peftpack", "-o", "{input}/existing.peftpack/out.gguf"], NOT_A_FOLDER)
lora_pack.unlink()
# Packs with several adapters, and the base bound by content: a pack bound to llama-tiny given
# another checkpoint of it; PEFT save folders with a broken sub-folder adapter or none at the root;
# adapters of two bases in one pack.
bound = CORPUS / "_bound.peftpack"
subprocess.run([binary, "import", str(DATA / "cases" / "llama_lora" / "adapter"), "-o", str(bound), "--base", str(DATA / "models" / "llama-tiny")],
               check=True, capture_output=True)
bound_pack = bound.read_bytes()
bound.unlink()
OTHER_BASE = "{fixtures}/base_binding/llama-tiny-partial-ft"
case(write("bound_merge_other_checkpoint.peftpack", bound_pack), ["merge", "--base", OTHER_BASE, "{input}", "-o", "{output}"], "holds other values")
case(write("bound_verify_other_checkpoint.peftpack", bound_pack), ["verify", "{input}", "--base", OTHER_BASE, "--merged", OTHER_BASE], "holds other values")
case(write("bound_import_rebound.peftpack", bound_pack), IMPORT + ["--base", OTHER_BASE], "import it without --base")
case(write("bound_merge_force_is_not_a_skip.peftpack", bound_pack), ["merge", "--base", OTHER_BASE, "{input}", "-o", "{output}", "--force"], "--skip-base-check")
save = peft_folder("peft_save_broken_subfolder")
peft_folder("peft_save_broken_subfolder/second", weights=False)
case(save, IMPORT, "peft_save_broken_subfolder/second: has no adapter_model.safetensors")
(CORPUS / "peft_save_no_root").mkdir()
peft_folder("peft_save_no_root/second")
case("peft_save_no_root", IMPORT + ["--name", "task"], "holds no adapter at its root")
case(peft_folder("peft_with_other_base"), ["import", "{input}", "{fixtures}/cases/gpt2_lora_fan_in_fan_out/adapter", "--name", "a", "--name", "b", "-o", "{output}"],
     "adapters of different bases cannot share a pack")

# CLI flags (issue 17): a refusal that a flag would resolve gets that flag from the CLI (the library
# states only the fact), and an option value the parser or a command's validate() refuses is one
# line like every other usage error.
made = CORPUS / "_cli.peftpack"
subprocess.run([binary, "import", str(DATA / "cases" / "llama_lora" / "adapter"), "-o", str(made), "--base", str(DATA / "models" / "llama-tiny")],
               check=True, capture_output=True)
cli_lora = made.read_bytes()
subprocess.run([binary, "import", str(DATA / "cases" / "llama_lora" / "adapter"), str(DATA / "cases" / "llama_prefix" / "adapter"),
                "-o", str(made), "--name", "lora", "--name", "prefix", "--force"], check=True, capture_output=True)
cli_two = made.read_bytes()
made.unlink()
case(write("cli_export_of_two.peftpack", cli_two), ["export", "{input}", "-o", "{output}"], "holds 2 adapters (lora, prefix); choose one with --name")
case(write("cli_rename_two.peftpack", cli_two), IMPORT + ["--name", "task"], "holds 2 adapters, so one name cannot be given to it; --name can only rename a single one")
case(peft_folder("cli_same_name_twice"), ["import", "{input}", "{input}", "-o", "{output}"], "two adapters are named default; give distinct names with --name")
case(write("cli_merge_prompt.peftpack", good_pack), ["merge", "--base", LLAMA, "{input}", "-o", "{output}"], "cannot be folded into weights; pass --skip-unmergeable to leave it out")
case(write("cli_prompt_to_adapterhub.peftpack", good_pack), ["export", "{input}", "-o", "{output}", "--format", "adapterhub"],
     "is a prompt adapter; AdapterHub export takes bottleneck adapters; use --format peft")
two_outputs = {"input_ids": ("I64", [1, 4], struct.pack("<4q", 1, 2, 3, 4)), "output_a": ("F32", [1], struct.pack("<f", 0)),
               "output_b": ("F32", [1], struct.pack("<f", 0))}
offset, entries, payload = 0, {}, b""
for key, (dtype, shape, data) in two_outputs.items():
    entries[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
    offset, payload = offset + len(data), payload + data
reference_header = json.dumps(entries).encode()
reference_header += b" " * (-len(reference_header) % 8)
write("cli_reference_two_outputs/lora.peftpack", cli_lora)
write("cli_reference_two_outputs/reference.safetensors", struct.pack("<Q", len(reference_header)) + reference_header + payload)
case("cli_reference_two_outputs", ["verify", "{input}/lora.peftpack", "--base", LLAMA, "--reference", "{input}/reference.safetensors"],
     "holds several outputs (output_a, output_b); choose one with --key")
case(write("cli_budget_below_whole.txt", b"x"), ["extract", "--base", LLAMA, "--finetuned", "{fixtures}/models/llama-tiny-ft", "-o", "{output}", "--budget", "10"],
     "a budget of 10 parameters is smaller than the")
for name, command, expect in [
    ("dtype", ["merge", "--base", LLAMA, "{input}", "-o", "{output}", "--dtype", "fp8"], "The value 'fp8' is invalid for '--dtype <dtype>'. Please provide one of 'bf16', 'fp16', 'fp32', 'auto' or 'same'."),
    ("gguf_dtype", ["export", "{input}", "-o", "{output}", "--format", "gguf", "--dtype", "q4_0"], "Please provide one of 'f32', 'f16', 'bf16' or 'q8_0'."),
    ("max_shard_size", ["merge", "--base", LLAMA, "{input}", "-o", "{output}", "--max-shard-size", "0"], "--max-shard-size must be a size such as 500MB or 2GB"),
    ("max_shard_syntax", ["merge", "--base", LLAMA, "{input}", "-o", "{output}", "--max-shard-size", "big"], "is invalid for '--max-shard-size <max-shard-size>': not a size"),
    ("budget_overflow", ["extract", "--base", LLAMA, "--finetuned", "{fixtures}/models/llama-tiny-ft", "-o", "{output}", "--budget", "1e30K"], "not a parameter count"),
    ("stack_rank", ["stack", "{input}", "-o", "{output}", "--rank", "0"], "--rank must be at least 1 (got 0)"),
    ("input_ids", ["verify", "{input}", "--base", LLAMA, "--against", "{input}", "--input-ids", "2,0"], "takes BATCH,SEQ (positive integers)"),
    ("metadata", IMPORT + ["--metadata", "=value"], "is invalid for '--metadata <metadata>': takes KEY=VALUE"),
]:
    case(write(f"cli_option_{name}.peftpack", cli_lora), command, expect)

# checkpoint buffers (issue 17): a base and a fine-tune may differ by buffers (the base here stores
# embeddings.position_ids, the fine-tune not) and extract leaves those out; a parameter stored on
# one side only is still refused, naming it, whichever side lacks it.
def without_tensor(source, name, dropped):
    folder = CORPUS / name
    folder.mkdir(parents=True, exist_ok=True)
    raw = (source / "model.safetensors").read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + length])
    data = raw[8 + length :]
    kept, out = {}, b""
    for key, entry in sorted(((k, v) for k, v in header.items() if k not in ("__metadata__", dropped)), key=lambda item: item[1]["data_offsets"][0]):
        start, end = entry["data_offsets"]
        kept[key] = {**entry, "data_offsets": [len(out), len(out) + end - start]}
        out += data[start:end]
    if "__metadata__" in header:
        kept["__metadata__"] = header["__metadata__"]
    text = json.dumps(kept, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + out)
    (folder / "config.json").write_text((source / "config.json").read_text())
    return name


BUFFERS = DATA / "buffers"
case(without_tensor(BUFFERS / "bert-finetuned", "buffers_finetune_lacks_parameter", "encoder.layer.0.output.LayerNorm.weight"),
     ["extract", "--base", "{fixtures}/buffers/bert-base", "--finetuned", "{input}", "-o", "{output}"],
     "lacks tensor encoder.layer.0.output.LayerNorm.weight")
case(without_tensor(BUFFERS / "bert-base", "buffers_base_lacks_parameter", "pooler.dense.bias"),
     ["extract", "--base", "{input}", "--finetuned", "{fixtures}/buffers/bert-finetuned", "-o", "{output}"],
     "has tensor pooler.dense.bias")


# Model families (issue 17): bases whose config and tensors disagree on what the family needs
# (a Qwen3 k_norm over the hidden size instead of head_dim, a head_dim that does not fit q_proj),
# and a Mistral sliding window of 0 (refused from config.json alone: that base keeps no tensors),
# given to verify with an adapter imported without a base.
def family_base(name, family, config_changes=None, replace=None, tensors=True):
    folder = CORPUS / name
    shutil.copytree(DATA / "families" / family / "model", folder / "base")
    if not tensors:
        empty = b'{"__metadata__":{"format":"pt"}}'
        (folder / "base" / "model.safetensors").write_bytes(struct.pack("<Q", len(empty) + (-len(empty) % 8)) + empty + b" " * (-len(empty) % 8))
    subprocess.run([binary, "import", str(DATA / "families" / family / "cases" / f"{family}_lora" / "adapter"), "-o", str(folder / "lora.peftpack")],
                   check=True, capture_output=True)
    if config_changes:
        config = json.loads((folder / "base" / "config.json").read_text())
        (folder / "base" / "config.json").write_text(json.dumps({**config, **config_changes}, indent=2))
    if replace:
        tensor, shape = replace
        raw = (folder / "base" / "model.safetensors").read_bytes()
        length = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8 : 8 + length])
        data = raw[8 + length :]
        count = 1
        for dim in shape:
            count *= dim
        tensors = {key: data[info["data_offsets"][0] : info["data_offsets"][1]] for key, info in header.items() if key != "__metadata__"}
        tensors[tensor] = struct.pack("<f", 1.0) * count
        header[tensor] = {**header[tensor], "shape": shape}
        packed = b""
        for key in sorted(tensors):
            header[key]["data_offsets"] = [len(packed), len(packed) + len(tensors[key])]
            packed += tensors[key]
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        (folder / "base" / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + packed)
    return name
FAMILY_VERIFY = ["verify", "{input}/lora.peftpack", "--base", "{input}/base", "--input-ids", "1,7"]
case(family_base("families_qwen3_k_norm_shape", "qwen3", replace=("model.layers.1.self_attn.k_norm.weight", [64])), FAMILY_VERIFY + ["--merged", "{input}/base"],
     "tensor model.layers.1.self_attn.k_norm.weight has shape [64] but the config implies [32]")
case(family_base("families_qwen3_head_dim", "qwen3", config_changes={"head_dim": 16}), FAMILY_VERIFY + ["--merged", "{input}/base"],
     "tensor model.layers.0.self_attn.q_proj.weight has shape [128, 64] but the config implies [64, 64]")
case(family_base("families_mistral_window_zero", "mistral", config_changes={"sliding_window": 0}, tensors=False), FAMILY_VERIFY + ["--merged", "{input}/base"],
     "sliding_window must be positive, got 0")
# Gemma 2 / Gemma 3 configs (issue 17, families): settings transformers cannot run or the causal
# runtime does not compute, refused when the base is loaded. Each base folder is its config.json
# beside a model.safetensors holding no tensors (the config is refused before any weight is read).
gemma_packs = CORPUS / "gemma_packs"
gemma_packs.mkdir()
for family in ["gemma2", "gemma3"]:
    subprocess.run([binary, "import", str(DATA / "families" / family / "cases" / f"{family}_lora" / "adapter"), "-o",
                    str(gemma_packs / f"{family}_lora.peftpack")], check=True, capture_output=True)
def gemma_base(name, family, **changes):
    folder = CORPUS / name
    folder.mkdir()
    config = json.loads((DATA / "families" / family / "model" / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}, indent=2))
    header = b"{}      "
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    return name
def gemma_verify(family):
    return ["verify", f"{{input}}/../gemma_packs/{family}_lora.peftpack", "--base", "{input}", "--reference",
            f"{{fixtures}}/families/{family}/cases/{family}_lora/{family}_lora.ref.safetensors"]
case(gemma_base("gemma3_bidirectional", "gemma3", use_bidirectional_attention=True), gemma_verify("gemma3"),
     "gemma3_text with use_bidirectional_attention=true")
case(gemma_base("gemma2_null_window", "gemma2", sliding_window=None), gemma_verify("gemma2"),
     "sliding_window is null but layer_types has sliding_attention layers")
case(gemma_base("gemma2_query_scalar_zero", "gemma2", query_pre_attn_scalar=0), gemma_verify("gemma2"),
     "query_pre_attn_scalar must be positive")
case(gemma_base("gemma2_softcap_zero", "gemma2", final_logit_softcapping=0), gemma_verify("gemma2"),
     "final_logit_softcapping must be positive")
case(gemma_base("gemma3_pattern_zero", "gemma3", layer_types=None, sliding_window_pattern=0), gemma_verify("gemma3"),
     "sliding_window_pattern must be positive")

# Streaming verify at scale (issue 18): a sharded checkpoint given to verify (as the merged model or
# as the base) with a shard its index lists missing, a shard whose header claims more data than the
# file holds, an index that maps a tensor to a shard holding other tensors, and one that maps a
# tensor no shard holds. Each is refused when the folder is opened, before any forward pass.
stream_pack = CORPUS / "stream_bf16_lora.peftpack"
subprocess.run([binary, "import", str(DATA / "cases" / "llama_bf16_lora" / "adapter"), "-o", str(stream_pack)], check=True, capture_output=True)
SHARDS = ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"]
def sharded_copy(name, drop=None, truncate=None, remap=None, extra=None):
    folder = CORPUS / name
    shutil.copytree(DATA / "models" / "llama-tiny-bf16", folder)
    if drop:
        (folder / drop).unlink()
    if truncate:
        raw = (folder / truncate).read_bytes()
        (folder / truncate).write_bytes(raw[:-100])
    if remap or extra:
        index = json.loads((folder / "model.safetensors.index.json").read_text())
        index["weight_map"].update(remap or {})
        index["weight_map"].update(extra or {})
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return name
STREAM_MERGED = ["verify", "{input}/../stream_bf16_lora.peftpack", "--base", "{fixtures}/models/llama-tiny-bf16", "--merged", "{input}", "--input-ids", "2,8"]
STREAM_BASE = ["verify", "{input}/../stream_bf16_lora.peftpack", "--base", "{input}", "--merged", "{fixtures}/cases/llama_bf16_lora/merged", "--input-ids", "2,8"]
case(sharded_copy("stream_merged_missing_shard", drop=SHARDS[1]), STREAM_MERGED, f"names shard {SHARDS[1]}, which does not exist")
case(sharded_copy("stream_merged_truncated_shard", truncate=SHARDS[2]), STREAM_MERGED, f"{SHARDS[2]}: tensors need")
case(sharded_copy("stream_merged_index_wrong_shard", remap={"lm_head.weight": SHARDS[2]}), STREAM_MERGED,
     f"lm_head.weight: is mapped to {SHARDS[2]} but stored in {SHARDS[0]}")
case(sharded_copy("stream_merged_index_phantom_tensor", extra={"model.layers.9.mlp.up_proj.weight": SHARDS[2]}), STREAM_MERGED,
     f"model.layers.9.mlp.up_proj.weight: is mapped to {SHARDS[2]} but that shard does not contain it")
case(sharded_copy("stream_base_missing_shard", drop=SHARDS[0]), STREAM_BASE, f"names shard {SHARDS[0]}, which does not exist")
case(sharded_copy("stream_base_truncated_shard", truncate=SHARDS[1]), STREAM_BASE, f"{SHARDS[1]}: tensors need")

# Fragments of the message for the cases written above without one.
FRAGMENTS = {
    "st_truncated_data.safetensors": "data bytes", "st_overlap.safetensors": "overlaps",
    "pack_bad_magic.peftpack": "is neither", "pack_truncated_preamble.peftpack": "preamble",
    "pack_truncated_end.peftpack": "truncated or damaged", "pack_preamble_checksum.peftpack": "preamble checksum",
    "pack_header_flip.peftpack": "header checksum", "pack_chunk_flip.peftpack": "checksum mismatch",
    "pack_major_version.peftpack": "damaged", "peft_rank_zero": "adapter_config.json gives",
    "peft_wrong_base_shapes": "does not have", "hub_config_not_object": "config",
    "not_a_pack.peftpack": "preamble", "text.peftpack": "preamble", "empty.peftpack": "preamble",
    "text_for_verify.peftpack": "preamble",
}
for entry in cases:
    if entry["name"].startswith("pickle_") and not entry["expect"]:
        entry["expect"] = "forbidden global"
    entry["expect"] = entry["expect"] or FRAGMENTS[entry["name"]]
(HERE / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")
print(f"{len(cases)} malformed inputs")
