"""Prompt Expander core: turn a short concept into a detailed Stable Diffusion prompt."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["expand", "expand_many", "load_expander", "unload", "Expander", "ExpansionResult", "ExpandSettings",
           "ExpanderError", "InputError", "ModelLoadError", "AdapterError", "NegativeNotSupportedError"]

from .errors import AdapterError, ExpanderError, InputError, ModelLoadError, NegativeNotSupportedError  # noqa: E402


def __getattr__(name):
    # torch and transformers load on first use, so `--help` and host start-up stay fast.
    if name in ("Expander", "ExpansionResult", "ExpandSettings"):
        from .expansion import expander
        return getattr(expander, name)
    if name in ("load_expander", "unload"):
        from .expansion import resident
        return getattr(resident, name)
    raise AttributeError(name)


def expand(text: str, seed=0, *, model=None, loras=(), device="cpu", dtype="auto", **settings):
    """Expand one prompt. `loras` takes 'name', 'name:0.7' or (name, weight) items."""
    from .expansion.resident import load_expander
    return load_expander(model, device, dtype).expand(text, seed, styles=loras, **settings)


def expand_many(text: str, n: int, seed=0, *, model=None, loras=(), device="cpu", dtype="auto", **settings):
    """n variations in one batched call; variation i equals expand(text, seed + i)."""
    from .expansion.resident import load_expander
    return load_expander(model, device, dtype).expand_many(text, n, seed, styles=loras, **settings)
