"""Base/fine-tune pairs saved by different transformers versions (fixtures/data/buffers, and
inspect/gpt2-legacy against tied/models/gpt2-tiny-ft), judged by transformers itself: one side
stores buffers (position ids, rotary inv_freq, GPT-2's causal masks) or a copy of the tied head,
the other does not. For each pair, a full-rank `peftpack extract` is merged into the base with
`peftpack merge`; the merged folder, loaded by transformers (which loads a stored head copy into
the shared weight), must give the fine-tune's output, and the extracted pack exported to PEFT must
too (PeftModel on the base).

Runs in .venv/peft. Tolerance 1e-4 relative to the output's largest magnitude: full-rank fp32
factors of the fine-tune's deltas (observed at most 1e-6 here)."""
import json
import sys

import torch
import transformers
from peft import PeftModel
from safetensors.torch import load_file

from common import FIXTURES, Tally, run_peftpack, scratch_dir

TOLERANCE = 1e-4
PAIRS = [
    ("buffers/bert-base", "buffers/bert-finetuned", "buffers/bert-finetuned.ref.safetensors", "last_hidden_state"),
    ("buffers/llama-base", "buffers/llama-finetuned", "buffers/llama-finetuned.ref.safetensors", "logits"),
    ("inspect/gpt2-legacy", "tied/models/gpt2-tiny-ft", "tied/models/gpt2-tiny-ft.ref.safetensors", "logits"),
]


def load(folder):
    architecture = json.loads((folder / "config.json").read_text())["architectures"][0]
    return getattr(transformers, architecture).from_pretrained(str(folder), dtype=torch.float32, attn_implementation="eager").eval()


def output(model, input_ids, name):
    with torch.no_grad():
        return getattr(model(input_ids=input_ids), name)


def close(actual, expected, what):
    scale = expected.abs().max().item()
    error = (actual - expected).abs().max().item()
    if error > TOLERANCE * scale:
        raise AssertionError(f"{what}: max abs {error:.3g} > {TOLERANCE:g} × {scale:.3g}")


def check_pair(base, finetuned, reference, name, work):
    label = finetuned.replace("/", "_")
    pack, merged, exported = work / f"{label}.peftpack", work / f"{label}-merged", work / f"{label}-peft"
    report = json.loads(run_peftpack("extract", "--base", str(FIXTURES / base), "--finetuned", str(FIXTURES / finetuned),
                                     "-o", str(pack), "--rank", "128", "--exact", "--json").stdout)
    if not report["ignored"]:
        raise AssertionError("the report lists nothing left out")
    run_peftpack("merge", "--base", str(FIXTURES / base), str(pack), "-o", str(merged))
    tensors = load_file(str(FIXTURES / reference))
    expected, input_ids = tensors["output_adapter"], tensors["input_ids"]
    close(output(load(merged), input_ids, name), expected, "merged folder in transformers")
    # Negative control: the base alone is far from the fine-tune.
    if (tensors["output_base"] - expected).abs().max().item() <= 100 * TOLERANCE * expected.abs().max().item():
        raise AssertionError("the reference does not tell the fine-tune from its base")
    run_peftpack("export", str(pack), "-o", str(exported), "--format", "peft")
    peft = PeftModel.from_pretrained(load(FIXTURES / base), str(exported)).eval()
    close(output(peft, input_ids, name), expected, "exported pack in PEFT")


def main() -> int:
    transformers.utils.logging.set_verbosity_error()
    work = scratch_dir()
    tally = Tally("checkpoint buffers: extract and merge across transformers versions")
    for base, finetuned, reference, name in PAIRS:
        tally.check(f"{base} -> {finetuned}", lambda b=base, f=finetuned, r=reference, n=name: check_pair(b, f, r, n, work))
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
