"""Merges into an MLX-quantized base judged by mlx-lm 0.32 itself (mlx[cpu] on Linux), in .venv/mlx.

The base is fixtures/data/mlx_quantized/q4_g64/model (models/llama-tiny in bf16, quantized by
mlx_lm's quantize_model at 4 bits, group size 64) and the adapter mlx-lm's own LoRA of
fixtures/data/mlx_adapters/mlx_lora. Each peftpack output is loaded with mlx_lm.utils.load_model
(what mlx_lm.load does, without the tokenizer the fixtures do not have) and run on the fixture's
input ids:

- the default merge (a plain bf16 model, `quantization` dropped) against mlx_lm.fuse --dequantize's
  model (each LoRA layer's fuse(dequantize=True), then dequantize_model): fuse adds bf16(ΔW) to the
  bf16 weight, rounding twice where peftpack rounds the exact sum once, so some merged elements
  differ by a bf16 step, and the model runs in bf16: 1e-2 relative to the largest |logit|
  (measured 5.9e-3; each is 3.6-3.8e-2 from mlx-lm running the adapter unfused, whose LoRA path
  adds in fp32 beside bf16 activations);
- `--dtype same` against mlx-lm on the base with the fixture's mx.quantize of the exact fp32 merge
  put in place of the merged layers: the same tensors, so the logits must be equal (0); and against
  mlx_lm.fuse's model, which quantizes bf16(W) + bf16(ΔW) instead and so moves a few codes by one
  step: reported, within 5e-2 relative (a 4-bit step of one group's weights);
- `--dtype same --promote bf16 --min-survival 0.95`: the promoted layer is stored dense and mlx-lm
  must build it as a Linear, not a QuantizedLinear, and its logits stay within the default merge's
  tolerance of the unfused adapter's."""
import json
import sys

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_unflatten
from mlx_lm.tuner.utils import load_adapters
from mlx_lm.utils import dequantize_model, load_model

from common import FIXTURES, Tally, run_peftpack, scratch_dir

BASE = FIXTURES / "mlx_quantized" / "q4_g64" / "model"
ADAPTER = FIXTURES / "mlx_adapters" / "mlx_lora" / "adapter"
REFERENCE = FIXTURES / "mlx_quantized" / "q4_g64" / "q4_g64.ref.safetensors"
BF16_TOLERANCE = 1e-2
FUSE_TOLERANCE = 5e-2


def logits(model, input_ids):
    return np.array(model(input_ids).astype(mx.float32))


def relative(ours, expected):
    return float(np.abs(ours - expected).max() / np.abs(expected).max())


def fused_dequantized():
    """mlx_lm.fuse --dequantize's model: each LoRA layer's fuse(dequantize=True), then dequantize_model."""
    model = load_adapters(load_model(BASE)[0], str(ADAPTER))
    model.update_modules(tree_unflatten([(n, m.fuse(dequantize=True)) for n, m in model.named_modules() if hasattr(m, "fuse")]))
    return dequantize_model(model)


def main() -> int:
    work = scratch_dir()
    refs = mx.load(str(REFERENCE))
    input_ids = refs["input_ids"]
    pack = work / "lora.peftpack"
    run_peftpack("import", str(ADAPTER), "--base", str(BASE), "-o", str(pack))
    adapted = load_adapters(load_model(BASE)[0], str(ADAPTER))
    unfused = logits(adapted, input_ids)
    tally = Tally("mlx-lm loads peftpack's merges into an MLX 4-bit base")

    def default():
        out = work / "merged"
        run_peftpack("merge", "--base", str(BASE), str(pack), "-o", str(out))
        config = json.loads((out / "config.json").read_text())
        assert "quantization" not in config and "quantization_config" not in config, "quantization left in config.json"
        model = load_model(out)[0]
        assert not any(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules()), "quantized layers in the default merge"
        ours = logits(model, input_ids)
        fuse = logits(fused_dequantized(), input_ids)
        error = relative(ours, fuse)
        assert error <= BF16_TOLERANCE, f"{error:.3g} relative to mlx_lm.fuse --dequantize"
        print(f"     default: {error:.2g} relative to mlx_lm.fuse --dequantize's model; to the unfused adapter on the "
              f"quantized base {relative(ours, unfused):.2g} (fuse's {relative(fuse, unfused):.2g})")

    def same():
        out = work / "same"
        run_peftpack("merge", "--base", str(BASE), str(pack), "-o", str(out), "--dtype", "same")
        model = load_model(out)[0]
        ours = logits(model, input_ids)
        exact, _ = load_model(BASE)
        exact.load_weights([(k[len("exact_quantized."):], v) for k, v in refs.items() if k.startswith("exact_quantized.")], strict=False)
        exact_error = relative(ours, logits(exact, input_ids))
        assert exact_error == 0, f"{exact_error:.3g} relative to mx.quantize of the exact merge"
        fuse_error = relative(ours, np.array(refs["fused_logits"]))
        assert fuse_error <= FUSE_TOLERANCE, f"{fuse_error:.3g} relative to mlx_lm.fuse"
        print(f"     same: equal to mx.quantize of the exact merge; {fuse_error:.2g} relative to mlx_lm.fuse's model, "
              f"{relative(ours, unfused):.2g} to the unfused adapter (fuse's: {relative(np.array(refs['fused_logits']), unfused):.2g})")

    def promoted():
        out = work / "promoted"
        run_peftpack("merge", "--base", str(BASE), str(pack), "-o", str(out), "--dtype", "same", "--promote", "bf16", "--min-survival", "0.95")
        model = load_model(out)[0]
        layers = dict(model.named_modules())
        assert isinstance(layers["model.layers.1.mlp.down_proj"], nn.Linear) and not isinstance(layers["model.layers.1.mlp.down_proj"], nn.QuantizedLinear)
        assert isinstance(layers["model.layers.1.self_attn.q_proj"], nn.QuantizedLinear)
        error = relative(logits(model, input_ids), unfused)
        print(f"     promoted down_proj: a dense Linear in mlx-lm; {error:.2g} relative to the unfused adapter")

    tally.check("default merge (bf16, quantization dropped)", default)
    tally.check("--dtype same", same)
    tally.check("--dtype same --promote bf16", promoted)
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
