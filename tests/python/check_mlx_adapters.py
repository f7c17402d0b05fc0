"""MLX adapters judged by mlx-lm 0.32 itself (mlx[cpu] on Linux), in .venv/mlx:

- export: PEFT fixture adapters (plain LoRA, rsLoRA with rank and alpha patterns, DoRA; Llama,
  Mistral, Qwen3 and Qwen2 (fixtures/data/mlx_qwen2, with q/k/v biases) bases) are imported with their base and exported with `--format mlx`;
  `mlx_lm.utils.load_model` + `mlx_lm.tuner.utils.load_adapters` (what `mlx_lm.utils.load(…,
  adapter_path=)` does, without a tokenizer the fixtures do not have) loads the folder and its
  logits on the case's input ids must equal PEFT's recorded logits.
- import: adapters mlx-lm made itself (fixtures/data/mlx_adapters, LoRA on the last layer only by
  keys, DoRA on every linear) are imported with the base; `peftpack verify --reference` must match
  MLX's own logits, and exported back to MLX, mlx-lm must reproduce them.
  (check_mlx_round_trip.py, in .venv/peft, exports the same imports to PEFT.)

mlx-lm 0.32 reads `rope_theta` at the top of config.json, where transformers 4 wrote it; transformers 5
writes it in `rope_parameters`, so mlx-lm gets each base through a folder whose config.json also has
it at the top (same weights, linked). mlx-lm 0.32 runs Mistral with its Llama model, which has no
sliding window: the Mistral fixture's
window of 3 tokens makes every later position differ already without an adapter (113% of the
largest logit), so on a base with `sliding_window` only the positions before the window are
compared, where the window changes nothing.

Tolerance: 1e-4 relative to the largest |logit| (the brief's bound). The base alone already
differs by fp32 summation order between torch and MLX (measured 7e-7 relative on llama-tiny);
folding a module's scale into B rounds once per element."""
import json
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx_lm.tuner.utils import load_adapters
from mlx_lm.utils import load_model
from safetensors import safe_open

from common import CASES, FIXTURES, Tally, run_peftpack, scratch_dir

TOLERANCE = 1e-4
PEFT_CASES = [
    CASES / "llama_lora",
    CASES / "llama_rslora_patterns",
    CASES / "llama_dora",
    FIXTURES / "families" / "mistral" / "cases" / "mistral_lora",
    FIXTURES / "families" / "mistral" / "cases" / "mistral_dora",
    FIXTURES / "families" / "qwen3" / "cases" / "qwen3_lora",
    FIXTURES / "families" / "qwen3" / "cases" / "qwen3_dora",
    FIXTURES / "mlx_qwen2" / "cases" / "mlx_qwen2_lora",
    FIXTURES / "mlx_qwen2" / "cases" / "mlx_qwen2_dora",
    # The token embedding, untied (mlx-lm's LoRAEmbedding beside the Linear head).
    CASES / "llama_lora_embedding",
    # A tied embedding whose head PEFT changes alike (ensure_weight_tying): one LoRAEmbedding,
    # whose as_linear is the head.
    FIXTURES / "tied" / "cases" / "qwen2_tied_lora_embed_ensure_tying",
]
MLX_CASES = FIXTURES / "mlx_adapters"


def reference(case_dir: Path):
    with safe_open(str(case_dir / f"{case_dir.name}.ref.safetensors"), framework="np") as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}, handle.metadata()


def as_mlx_reads_it(base: Path, work: Path) -> Path:
    """`base` with rope_theta also at the top of config.json (see the docstring)."""
    folder = work / "bases" / base.relative_to(FIXTURES).as_posix().replace("/", "-")
    if not folder.exists():
        folder.mkdir(parents=True)
        config = json.loads((base / "config.json").read_text())
        if "rope_theta" not in config and "rope_theta" in config.get("rope_parameters", {}):
            config["rope_theta"] = config["rope_parameters"]["rope_theta"]
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "model.safetensors").symlink_to(base / "model.safetensors")
    return folder


def mlx_logits(base: Path, adapter: Path | None, input_ids):
    model, _ = load_model(as_mlx_reads_it(base, WORK))
    if adapter is not None:
        load_adapters(model, str(adapter))
    return np.array(model(mx.array(input_ids)).astype(mx.float32))


def compare(output, expected, what):
    if output.shape != expected.shape:
        raise AssertionError(f"{what}: shape {output.shape} != reference {expected.shape}")
    error = np.abs(output - expected).max() / np.abs(expected).max()
    if not error <= TOLERANCE:
        raise AssertionError(f"{what}: max |mlx - reference| / max |reference| = {error:.3g} > {TOLERANCE}")
    return error


def positions_mlx_runs_alike(base: Path):
    """The positions where mlx-lm's model computes what transformers' does (see the docstring)."""
    window = json.loads((base / "config.json").read_text()).get("sliding_window")
    return slice(0, window) if window else slice(None)


def check_export(case_dir: Path, work: Path):
    tensors, metadata = reference(case_dir)
    base = FIXTURES / metadata["base"]
    positions = positions_mlx_runs_alike(base)
    tensors = {name: value[:, positions] if name.startswith("output") else value for name, value in tensors.items()}
    pack, exported = work / f"{case_dir.name}.peftpack", work / f"{case_dir.name}-mlx"
    run_peftpack("import", str(case_dir / "adapter"), "--base", str(base), "-o", str(pack))
    run_peftpack("export", str(pack), "--format", "mlx", "-o", str(exported))
    base_error = compare(mlx_logits(base, None, tensors["input_ids"])[:, positions], tensors["output_base"], "base alone")
    error = compare(mlx_logits(base, exported, tensors["input_ids"])[:, positions], tensors["output_adapter"], "with the adapter")
    compared = "" if positions.stop is None else f", positions 0-{positions.stop - 1}"
    return f"{error:.2g} relative (base alone {base_error:.2g}{compared})"


def check_import(case_dir: Path, work: Path):
    tensors, metadata = reference(case_dir)
    base = FIXTURES / metadata["base"]
    pack, exported = work / f"{case_dir.name}.peftpack", work / f"{case_dir.name}-mlx"
    run_peftpack("import", str(case_dir / "adapter"), "--base", str(base), "-o", str(pack))
    run_peftpack("verify", str(pack), "--base", str(base), "--reference", str(case_dir / f"{case_dir.name}.ref.safetensors"),
                 "--atol", "0", "--rtol", str(TOLERANCE))
    run_peftpack("export", str(pack), "--format", "mlx", "-o", str(exported))
    error = compare(mlx_logits(base, exported, tensors["input_ids"]), tensors["output_adapter"], "re-exported")
    return f"verify passed; re-exported {error:.2g} relative"


WORK = scratch_dir()


def main() -> int:
    work = WORK
    tally = Tally("mlx-lm loads peftpack's MLX adapters")
    for case_dir in PEFT_CASES:
        tally.check(f"export {case_dir.name}", lambda case_dir=case_dir: print(f"     {case_dir.name}: {check_export(case_dir, work)}"))
    for case_dir in sorted(MLX_CASES.iterdir()):
        tally.check(f"import {case_dir.name}", lambda case_dir=case_dir: print(f"     {case_dir.name}: {check_import(case_dir, work)}"))
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
