"""Where the bundled model, adapters and user model folders live."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# In a checkout (and so in ComfyUI and A1111) the models sit beside the package; `pip install` puts them inside it.
_INSTALLED_MODELS = Path(__file__).resolve().parent / "bundled_models"
BUNDLED_MODELS = _INSTALLED_MODELS if _INSTALLED_MODELS.is_dir() else REPO_ROOT / "models"
DEFAULT_MODEL = BUNDLED_MODELS / "default"
BUNDLED_LORAS = BUNDLED_MODELS / "loras"


def user_models_dir() -> Path:
    """Where standalone users put extra models (hosts pass their own folders instead)."""
    env = os.environ.get("PROMPT_EXPANDER_MODELS")
    return Path(env) if env else Path.home() / ".cache" / "prompt_expander" / "models"


def _folders_holding(marker: str, roots) -> list[Path]:
    out = []
    for root in roots:
        root = Path(root)
        if root.is_dir():
            out.extend(sorted(p for p in root.iterdir() if (p / marker).is_file()))
    return out


def list_model_folders(*roots) -> list[Path]:
    """Sub-folders of `roots` that hold a model (a config.json)."""
    return _folders_holding("config.json", roots)


def list_adapter_folders(*roots) -> list[Path]:
    """Sub-folders of `roots` that hold a PEFT adapter (an adapter_config.json)."""
    return _folders_holding("adapter_config.json", roots)


def safe_child(root: Path, name: str) -> Path | None:
    """root/name if name is a plain folder name (no separators, no '..', not absolute) naming a folder there.

    Names come from shared workflows and API calls, so they never address anything but a direct child of
    a registered folder. A child that the user made a symbolic link (to another drive) is followed.
    """
    if not name or name in (".", "..") or any(c in name for c in "/\\\x00") or os.path.isabs(name):
        return None
    candidate = Path(root) / name
    return candidate if candidate.is_dir() else None


def find_named_folder(roots, name: str, marker: str) -> Path | None:
    """The first root/name holding `marker` (config.json or adapter_config.json), never outside the roots."""
    for root in roots:
        found = safe_child(Path(root), name)
        if found is not None and (found / marker).is_file():
            return found
    return None
