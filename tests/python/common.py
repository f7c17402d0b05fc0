"""Shared helpers for the Python-side checks: paths, the peftpack binary, a tiny test tally that
prints the closing line CI reads ('N passed, N failed')."""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures" / "data"
CASES = FIXTURES / "cases"
# Cases on how PEFT reads configs (issue 16): same layout as CASES.
CONFIG_CASES = FIXTURES / "configs"
MODELS = FIXTURES / "models"


def peftpack_binary() -> str:
    path = os.environ.get("PEFTPACK_BIN")
    if not path:
        sys.exit("PEFTPACK_BIN is not set: run through scripts/test.sh")
    return path


def run_peftpack(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([peftpack_binary(), *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"peftpack {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def reference(case: str, root: Path = CASES):
    """(tensors, metadata) of a case's reference file; metadata names the base and the output."""
    from safetensors import safe_open
    path = root / case / f"{case}.ref.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        return tensors, handle.metadata()


def load_base(metadata, dtype=None):
    """The case's base model, loaded as the generator loaded it (class from config.json)."""
    import json
    import torch
    import transformers
    directory = FIXTURES / metadata["base"]
    architecture = json.loads((directory / "config.json").read_text())["architectures"][0]
    model_class = getattr(transformers, architecture)
    model = model_class.from_pretrained(str(directory), dtype=dtype or torch.float32, attn_implementation="eager")
    return model.eval()


def model_output(model, input_ids, output_name):
    import torch
    with torch.no_grad():
        return getattr(model(input_ids=input_ids), output_name)


class Tally:
    def __init__(self, title: str):
        self.title = title
        self.passed = 0
        self.failed = 0

    def check(self, name: str, body):
        try:
            body()
        except Exception as error:  # a failed check is reported, the others still run
            self.failed += 1
            print(f"FAIL {self.title}: {name}: {error}", flush=True)
        else:
            self.passed += 1
            print(f"ok   {self.title}: {name}", flush=True)

    def finish(self) -> int:
        print(f"{self.title}", flush=True)
        print(f"python: {self.passed} passed, {self.failed} failed", flush=True)
        return 0 if self.failed == 0 and self.passed > 0 else 1


def scratch_dir() -> Path:
    """A temporary folder, removed when the check exits."""
    import atexit
    import shutil
    path = Path(tempfile.mkdtemp(prefix="peftpack-check-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
