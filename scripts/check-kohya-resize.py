"""peftpack resize's kohya criteria against kohya-ss sd-scripts' own networks/resize_lora.py, run
from a pinned checkout (not in CI: it needs the sd-scripts source). Run in .venv/peft:

    .venv/peft/bin/python scripts/check-kohya-resize.py PATH/TO/networks/resize_lora.py

resize_lora.py imports sd-scripts' `library` package for file helpers it does not use on this path;
those modules are stubbed. For every module of each PEFT LoRA fixture, kohya's own functions pick the
rank: merge_linear(lora_A, lora_B), torch's SVD of it and rank_resize with the criterion, uncapped
(what resize_lora_model does per module; the scale is left out, which no criterion depends on); the
cap (kohya's --new_rank, our --rank) is applied after. `peftpack resize --json` with the same
criterion and cap must pick the same rank for every module.

kohya's index functions changed across commits: sd-scripts main at 48d368f (2026-02-16) returns
`count` from index_sv_ratio and searchsorted + 1 from the others, and rank_resize adds 1 again, so
it keeps one singular value more than its criterion names (sv_ratio 2 with one value above s1/2
keeps 2); a later revision (063ef10) returns count - 1 and searchsorted, keeping exactly the values
the criterion names, as peftpack does. The script asks the file which it is (index_sv_ratio on
[1, 0, 0, 0] with ratio 2: 1 is main's, 0 the later one) and expects peftpack's ranks to equal
kohya's, or to be one less where kohya's is not clamped, accordingly."""
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures" / "data"
CASES = [("cases/llama_lora", "models/llama-tiny"), ("cases/llama_rslora_patterns", "models/llama-tiny"),
         ("lycoris/../cases/llama_dora", None)]
CRITERIA = [("sv_ratio", 2.0), ("sv_ratio", 4.0), ("sv_cumulative", 0.5), ("sv_cumulative", 0.9), ("sv_fro", 0.5), ("sv_fro", 0.9)]
CAP = 8


def load_kohya(path):
    library = types.ModuleType("library")
    for name in ("train_util", "model_util", "utils"):
        module = types.ModuleType(f"library.{name}")
        module.setup_logging = lambda *a, **k: None
        module.is_safetensors = lambda p: str(p).endswith(".safetensors")
        setattr(library, name, module)
        sys.modules[f"library.{name}"] = module
    sys.modules["library"] = library
    spec = importlib.util.spec_from_file_location("kohya_resize_lora", path)
    kohya = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kohya)
    return kohya


def main():
    kohya = load_kohya(sys.argv[1])
    extra = int(kohya.index_sv_ratio(torch.tensor([1.0, 0.0, 0.0, 0.0]), 2.0))  # 1: keeps one more
    print(f"kohya's index functions {'keep one value more than the criterion (main)' if extra else 'keep what the criterion names'}")
    binary = os.environ.get("PEFTPACK_BIN") or str(REPO / ".build/release/peftpack")
    work = Path(tempfile.mkdtemp())
    failures = 0
    for case, base in CASES[:2]:
        adapter = FIXTURES / case / "adapter"
        pack = work / "in.peftpack"
        subprocess.run([binary, "import", str(adapter), "--base", str(FIXTURES / base), "-o", str(pack), "--quiet", "--force"], check=True, capture_output=True)
        state = load_file(str(adapter / "adapter_model.safetensors"))
        state = {k: v.float() for k, v in state.items()}
        modules = sorted({k.removeprefix("base_model.model.").removesuffix(".lora_A.weight") for k in state if k.endswith(".lora_A.weight")})
        for method, parameter in CRITERIA:
            # kohya's own path: S of up @ down (merge_linear), then rank_resize; called uncapped,
            # so its criterion's pick is seen apart from the cap, which is applied after.
            theirs = {}
            for target in modules:
                down = state[f"base_model.model.{target}.lora_A.weight"]
                up = state[f"base_model.model.{target}.lora_B.weight"]
                singular = torch.linalg.svd(kohya.merge_linear(down, up, "cpu")).S
                theirs[target] = kohya.rank_resize(singular, 1 << 30, method, parameter)["new_rank"]
            flag = {"sv_ratio": "--sv-ratio", "sv_cumulative": "--sv-cumulative", "sv_fro": "--sv-fro"}[method]
            out = work / "out.peftpack"
            report = json.loads(subprocess.run([binary, "resize", str(pack), flag, str(parameter), "--rank", str(CAP), "-o", str(out), "--json", "--force"],
                                               check=True, capture_output=True, text=True).stdout)
            ours = {m["target"]: m["rank"] for m in report["modules"]}
            mismatched = []
            for target, rank in ours.items():
                expected = max(1, min(theirs[target] - extra, CAP))
                if rank != expected:
                    mismatched.append(f"{target}: peftpack {rank}, kohya {theirs[target]}")
            status = "ok  " if not mismatched else "FAIL"
            failures += bool(mismatched)
            print(f"{status} {case.split('/')[-1]} {method} {parameter}: {len(ours)} modules, ranks {sorted(set(ours.values()))}" + (f"; {mismatched[:3]}" if mismatched else ""))
    print(f"{'all agree' if not failures else f'{failures} disagreements'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
