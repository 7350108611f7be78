"""Write a model folder whose weights are a base with style adapters mixed in, as the expander mixes them."""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from prompt_expander.expansion.resident import load_expander  # noqa: E402
from prompt_expander.fileio import write_text_atomic  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("base", help="model folder (fp16 weights, as the shipped default's)")
    ap.add_argument("--lora", action="append", required=True, metavar="PATH:WEIGHT", help="adapter folder and weight")
    ap.add_argument("--out", required=True, help="new model folder (written whole, then moved into place)")
    args = ap.parse_args()
    base, out = Path(args.base), Path(args.out)
    with safe_open(str(base / "model.safetensors"), "pt") as f:
        names = list(f.keys())
        dtypes = {f.get_slice(k).get_dtype() for k in names}
    # Expander._set_style rounds a style mixed into fp16-valued weights to fp16, so the fp16 folder written here
    # writes exactly what the base with these styles writes; a base of other values would not.
    if dtypes != {"F16"}:
        raise SystemExit(f"{base}: weights are {sorted(dtypes)}; save the base in fp16 first")
    exp = load_expander(str(base), dtype="fp32", resident=False)
    state = exp.model_for_style(exp.parse_styles(args.lora)).state_dict()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(base, tmp, ignore=shutil.ignore_patterns("checkpoint", "cache", "model.safetensors"))
    save_file({k: state[k].to(torch.float16).contiguous() for k in names}, str(tmp / "model.safetensors"),
              metadata={"format": "pt"})
    write_text_atomic(tmp / "MERGED.txt", f"{base} + " + " + ".join(args.lora) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
