"""Merges into an MLX-quantized base judged by mlx-lm 0.32 itself (mlx[cpu] on Linux), in .venv/mlx.

The bases are fixtures/data/mlx_quantized/q4_g64/model (models/llama-tiny in bf16, quantized by
mlx_lm's quantize_model at 4 bits, group size 64) and mxfp4/model, mxfp8/model, nvfp4/model (the
same in mlx's float modes, as `mlx_lm.convert -q --q-mode mxfp4` writes it), the adapter mlx-lm's
own LoRA of fixtures/data/mlx_adapters/mlx_lora; the default and `--dtype same` checks run on each
base, the fuse comparison and promotion on q4_g64 and mxfp4 (the fixture fuses into those). Each
peftpack output is loaded with mlx_lm.utils.load_model (what mlx_lm.load does, without the
tokenizer the fixtures do not have) and run on the fixture's input ids:

- the default merge (a plain bf16 model, `quantization` dropped) against mlx_lm.fuse --dequantize's
  model (each LoRA layer's fuse(dequantize=True), then dequantize_model): fuse adds bf16(ΔW) to the
  bf16 weight, rounding twice where peftpack rounds the exact sum once, so some merged elements
  differ by a bf16 step, and the model runs in bf16: 1e-2 relative to the largest |logit|
  (measured 5.9e-3, 5.5-6.0e-3 on the float modes; each is 2-4e-2 from mlx-lm running the adapter
  unfused, whose LoRA path adds in fp32 beside bf16 activations);
- `--dtype same` against mlx-lm on the base with mx.quantize (mlx's, here) of the exact fp32 merge
  put in place of the merged layers: the stored tensors must be equal and so the logits (0); and
  against mlx_lm.fuse's model, which quantizes bf16(W) + bf16(ΔW) instead and so moves a few codes by one
  step: reported, within 5e-2 relative (a 4-bit step of one group's weights; measured 2.8e-2, mxfp4 4.5e-2);
- `--dtype same --promote bf16 --min-survival 0.95` (0.9 on mxfp4): down_proj of layer 1 (survival
  0.93, mxfp4 0.81) is stored dense and mlx-lm must build it as a Linear, not a QuantizedLinear;
- the same on q4_g64 with a per-module `quantization` entry for that down_proj: peftpack writes
  `false` for it and mlx-lm loads a Linear; the output with the entry put back fails to load (the
  control: mlx-lm follows the entry and looks for scales that are not there)."""
import json
import shutil
import sys

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_unflatten
from mlx_lm.tuner.utils import load_adapters
from mlx_lm.utils import dequantize_model, load_model

from common import FIXTURES, Tally, run_peftpack, scratch_dir

ADAPTER = FIXTURES / "mlx_adapters" / "mlx_lora" / "adapter"
# The survival threshold that promotes layer 1's down_proj (None: not checked).
BASES = {"q4_g64": 0.95, "mxfp4": 0.9, "mxfp8": None, "nvfp4": None}
PROMOTED = "model.layers.1.mlp.down_proj"
BF16_TOLERANCE = 1e-2
FUSE_TOLERANCE = 5e-2


def logits(model, input_ids):
    return np.array(model(input_ids).astype(mx.float32))


def relative(ours, expected):
    return float(np.abs(ours - expected).max() / np.abs(expected).max())


def fused_dequantized(base):
    """mlx_lm.fuse --dequantize's model: each LoRA layer's fuse(dequantize=True), then dequantize_model."""
    model = load_adapters(load_model(base)[0], str(ADAPTER))
    model.update_modules(tree_unflatten([(n, m.fuse(dequantize=True)) for n, m in model.named_modules() if hasattr(m, "fuse")]))
    return dequantize_model(model)


def exact_quantized(base):
    """mx.quantize of fp32(mx.dequantize(W) + ΔW) for each LoRA layer, with the layer's own mode
    (the fixture's exact_quantized.*, computed here by mlx for the bases the fixture has no fuse of)."""
    model = load_adapters(load_model(base)[0], str(ADAPTER))
    tensors = []
    for path, module in model.named_modules():
        if hasattr(module, "fuse"):
            linear = module.linear
            quantization = {"group_size": linear.group_size, "bits": linear.bits, "mode": linear.mode}
            weight = mx.dequantize(linear.weight, linear.scales, linear.get("biases"), **quantization)
            exact = weight.astype(mx.float32) + (module.scale * module.lora_b.T) @ module.lora_a.T
            q, scales, *biases = mx.quantize(exact, **quantization)
            tensors += [(f"{path}.weight", q), (f"{path}.scales", scales.astype(weight.dtype) if biases else scales)]
            tensors += [(f"{path}.biases", b.astype(weight.dtype)) for b in biases]
    return tensors


def check_base(variant, min_survival, work, tally):
    base = FIXTURES / "mlx_quantized" / variant / "model"
    refs = mx.load(str(FIXTURES / "mlx_quantized" / variant / f"{variant}.ref.safetensors"))
    input_ids = refs["input_ids"]
    work = work / variant
    work.mkdir()
    pack = work / "lora.peftpack"
    run_peftpack("import", str(ADAPTER), "--base", str(base), "-o", str(pack))
    adapted = load_adapters(load_model(base)[0], str(ADAPTER))
    unfused = logits(adapted, input_ids)

    def default():
        out = work / "merged"
        run_peftpack("merge", "--base", str(base), str(pack), "-o", str(out))
        config = json.loads((out / "config.json").read_text())
        assert "quantization" not in config and "quantization_config" not in config, "quantization left in config.json"
        model = load_model(out)[0]
        assert not any(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules()), "quantized layers in the default merge"
        ours = logits(model, input_ids)
        fuse = logits(fused_dequantized(base), input_ids)
        error = relative(ours, fuse)
        assert error <= BF16_TOLERANCE, f"{error:.3g} relative to mlx_lm.fuse --dequantize"
        print(f"     default: {error:.2g} relative to mlx_lm.fuse --dequantize's model; to the unfused adapter on the "
              f"quantized base {relative(ours, unfused):.2g} (fuse's {relative(fuse, unfused):.2g})")

    def same():
        out = work / "same"
        run_peftpack("merge", "--base", str(base), str(pack), "-o", str(out), "--dtype", "same")
        model = load_model(out)[0]
        ours = logits(model, input_ids)
        exact, _ = load_model(base)
        tensors = exact_quantized(base)
        stored = mx.load(str(out / "model.safetensors"))
        assert all(mx.array_equal(stored[name], value) for name, value in tensors), "a merged layer's bytes differ from mx.quantize's"
        exact.load_weights(tensors, strict=False)
        exact_error = relative(ours, logits(exact, input_ids))
        assert exact_error == 0, f"{exact_error:.3g} relative to mx.quantize of the exact merge"
        if "fused_logits" not in refs:
            print(f"     same: {len(tensors)} tensors equal to mx.quantize's of the exact merge, logits equal; "
                  f"{relative(ours, unfused):.2g} relative to the unfused adapter")
            return
        fuse_error = relative(ours, np.array(refs["fused_logits"]))
        assert fuse_error <= FUSE_TOLERANCE, f"{fuse_error:.3g} relative to mlx_lm.fuse"
        print(f"     same: {len(tensors)} tensors equal to mx.quantize's of the exact merge, logits equal; {fuse_error:.2g} relative to "
              f"mlx_lm.fuse's model, {relative(ours, unfused):.2g} to the unfused adapter (fuse's: {relative(np.array(refs['fused_logits']), unfused):.2g})")

    def promoted():
        out = work / "promoted"
        run_peftpack("merge", "--base", str(base), str(pack), "-o", str(out), "--dtype", "same", "--promote", "bf16",
                     "--min-survival", str(min_survival))
        model = load_model(out)[0]
        assert_promoted(model)
        error = relative(logits(model, input_ids), unfused)
        print(f"     promoted down_proj: a dense Linear in mlx-lm; {error:.2g} relative to the unfused adapter")

    tally.check(f"{variant}: default merge (bf16, quantization dropped)", default)
    tally.check(f"{variant}: --dtype same", same)
    if min_survival is not None:
        tally.check(f"{variant}: --dtype same --promote bf16", promoted)


def assert_promoted(model):
    layers = dict(model.named_modules())
    assert isinstance(layers[PROMOTED], nn.Linear) and not isinstance(layers[PROMOTED], nn.QuantizedLinear), "promoted layer quantized"
    assert isinstance(layers["model.layers.1.self_attn.q_proj"], nn.QuantizedLinear)


def check_per_module_entry(work, tally):
    """q4_g64 whose `quantization` names the module that gets promoted."""
    base = work / "per_module"
    shutil.copytree(FIXTURES / "mlx_quantized" / "q4_g64" / "model", base)
    config = json.loads((base / "config.json").read_text())
    entry = {"group_size": 64, "bits": 4, "mode": "affine"}
    config["quantization"][PROMOTED] = entry
    (base / "config.json").write_text(json.dumps(config, indent=4))

    def promoted():
        pack = work / "per_module.peftpack"
        run_peftpack("import", str(ADAPTER), "--base", str(base), "-o", str(pack))
        out = work / "per_module_promoted"
        run_peftpack("merge", "--base", str(base), str(pack), "-o", str(out), "--dtype", "same", "--promote", "bf16", "--min-survival", "0.95")
        written = json.loads((out / "config.json").read_text())
        assert written["quantization"][PROMOTED] is False and written["quantization_config"][PROMOTED] is False, "promoted module not marked"
        assert_promoted(load_model(out)[0])
        written["quantization"][PROMOTED] = entry
        (out / "config.json").write_text(json.dumps(written, indent=4))
        try:
            load_model(out)
        except ValueError as error:
            print(f"     marked false, loads as a Linear; with the entry put back mlx-lm refuses it ({str(error).splitlines()[0].strip()})")
        else:
            raise AssertionError("the output with the per-module entry put back loaded: the control does not test the marking")

    tally.check("q4_g64 with a per-module entry: --promote marks the module false", promoted)


def main() -> int:
    work = scratch_dir()
    tally = Tally("mlx-lm loads peftpack's merges into MLX-quantized (affine, mxfp4, mxfp8, nvfp4) bases")
    for variant, min_survival in BASES.items():
        check_base(variant, min_survival, work, tally)
    check_per_module_entry(work, tally)
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
