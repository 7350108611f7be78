"""Where the bundled model, adapters and user model folders live."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_MODELS = REPO_ROOT / "models"
DEFAULT_MODEL = BUNDLED_MODELS / "default"
BUNDLED_LORAS = BUNDLED_MODELS / "loras"


def user_models_dir() -> Path:
    """Where standalone users put extra models (hosts pass their own folders instead)."""
    env = os.environ.get("PROMPT_EXPANDER_MODELS")
    return Path(env) if env else Path.home() / ".cache" / "prompt_expander" / "models"


def list_model_folders(*roots) -> list[Path]:
    """Sub-folders of `roots` that hold a model (a config.json)."""
    out = []
    for root in roots:
        root = Path(root)
        if root.is_dir():
            out.extend(sorted(p for p in root.iterdir() if (p / "config.json").is_file()))
    return out


def list_adapter_folders(*roots) -> list[Path]:
    out = []
    for root in roots:
        root = Path(root)
        if root.is_dir():
            out.extend(sorted(p for p in root.iterdir() if (p / "adapter_config.json").is_file()))
    return out
