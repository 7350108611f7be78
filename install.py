"""Installs what Prompt Expander needs and is missing; run by A1111/Forge and by ComfyUI-Manager.

It never upgrades the host's torch or transformers: everything is installed under a constraints
file that pins the versions already present (A1111 v1.10.1 pins transformers 4.30.2, Forge 4.46.1).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tempfile

# (import name, distribution name, pip requirement)
REQUIREMENTS = [
    ("safetensors", "safetensors", "safetensors>=0.3.1"),
    ("accelerate", "accelerate", "accelerate>=0.20.3"),
    ("tqdm", "tqdm", "tqdm"),
    ("PIL", "pillow", "Pillow"),
]
PINNED = ("torch", "transformers", "tokenizers", "numpy")


def version_of(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _launch():
    """A1111/Forge's launch module when run by them (they put the webui root on PYTHONPATH), else None."""
    try:
        import launch
    except ImportError:
        return None
    return launch if hasattr(launch, "run_pip") and hasattr(launch, "is_installed") else None


def is_present(module: str, dist: str | None = None) -> bool:
    launch = _launch()
    if launch is not None and dist is not None:
        return bool(launch.is_installed(dist))
    return importlib.util.find_spec(module) is not None


def peft_requirement() -> str:
    """peft 0.13.2 imports under transformers 4.30.2 (A1111), 4.46 (Forge) and 5.x; newer peft needs newer
    transformers, so hosts on 4.x get exactly 0.13.2."""
    tv = version_of("transformers")
    if tv is not None and int(tv.split(".")[0]) < 5:
        return "peft==0.13.2"
    return "peft>=0.13.2"


def missing() -> list[str]:
    """pip requirements for what is absent; torch is the host's business and is never installed here."""
    out = []
    if not is_present("transformers", "transformers"):
        out.append("transformers>=4.30.2")
    for module, dist, req in REQUIREMENTS:
        if not is_present(module, dist):
            out.append(req)
    if not is_present("peft", "peft"):
        out.append(peft_requirement())
    return out


def constraints_file() -> str:
    lines = [f"{name}=={v}" for name in PINNED if (v := version_of(name))]
    fd, path = tempfile.mkstemp(prefix="prompt_expander_constraints_", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def install(reqs: list[str]) -> None:
    constraints = constraints_file()
    try:
        launch = _launch()
        if launch is not None:
            for req in reqs:
                launch.run_pip(f'install "{req}" -c "{constraints}"', desc=f"Prompt Expander requirement: {req}")
        else:
            subprocess.check_call([sys.executable, "-m", "pip", "install", *reqs, "-c", constraints])
    finally:
        os.unlink(constraints)


def main() -> int:
    if not is_present("torch", "torch"):
        print("Prompt Expander: PyTorch is missing. Install the build for your machine first "
              "(https://pytorch.org), then run install.py again.")
        return 1
    reqs = missing()
    if reqs:
        print(f"Prompt Expander: installing {', '.join(reqs)}")
        install(reqs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
