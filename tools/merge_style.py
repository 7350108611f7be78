"""Write a model folder whose weights are a base with style adapters mixed in, as the expander mixes them."""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from prompt_expander.fileio import write_text_atomic  # noqa: E402
from prompt_expander.model.adapters import load_adapter_deltas  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("base", help="model folder (fp16 weights, as the shipped default's)")
    ap.add_argument("--lora", action="append", required=True, metavar="PATH:WEIGHT", help="adapter folder and weight")
    ap.add_argument("--out", required=True, help="new model folder (written whole, then moved into place)")
    args = ap.parse_args()
    base, out = Path(args.base), Path(args.out)
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(str(base), torch_dtype=torch.float32)
    weights = load_file(str(base / "model.safetensors"))
    # Rounded to fp16 as Expander._set_style rounds a style mixed into fp16-valued weights: the folder then
    # writes exactly what the base with these styles at these weights writes.
    dtypes = {v.dtype for v in weights.values()}
    if dtypes != {torch.float16}:
        raise SystemExit(f"{base}: weights are {dtypes}; save the base in fp16 first")
    mixed = {k: v.float() for k, v in weights.items()}
    for spec in args.lora:
        path, _, weight = spec.rpartition(":")
        for name, delta in load_adapter_deltas(model, Path(path), str(base)).items():
            mixed[name] = mixed[name] + float(weight) * delta
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(base, tmp, ignore=shutil.ignore_patterns("checkpoint", "cache", "model.safetensors"))
    save_file({k: v.half().contiguous() for k, v in mixed.items()}, str(tmp / "model.safetensors"),
              metadata={"format": "pt"})
    write_text_atomic(tmp / "MERGED.txt", f"{base} + " + " + ".join(args.lora) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
