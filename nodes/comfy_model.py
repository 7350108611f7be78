"""ComfyUI side of model handling: model folders, safe name resolution, and the ModelPatcher wrapper."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..prompt_expander.errors import ExpanderError
from ..prompt_expander.host.hosting import PromptExpanderModel
from ..prompt_expander.model.loading import DTYPES, dtype_to_load_for
from ..prompt_expander.paths import (BUNDLED_LORAS, DEFAULT_MODEL, find_named_folder, list_adapter_folders,
                                     list_model_folders)

FOLDER = "prompt_expander"
DEFAULT_CHOICE = "default (bundled)"


def register_folders() -> None:
    """models/prompt_expander in ComfyUI's models dir; extra_model_paths.yaml entries are kept."""
    import folder_paths
    folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER), is_default=True)


def model_roots() -> list[Path]:
    import folder_paths
    try:
        return [Path(p) for p in folder_paths.get_folder_paths(FOLDER)]
    except KeyError:
        return []


def lora_roots() -> list[Path]:
    return [BUNDLED_LORAS, *(root / "loras" for root in model_roots())]


def model_choices() -> list[str]:
    return [DEFAULT_CHOICE] + sorted({p.name for p in list_model_folders(*model_roots())})


def lora_choices() -> list[str]:
    return sorted({p.name for p in list_adapter_folders(*lora_roots())})


def resolve_model(name: str) -> Path:
    if name in (DEFAULT_CHOICE, "default"):
        return DEFAULT_MODEL
    found = find_named_folder(model_roots(), name, "config.json")
    if found is None:
        raise ExpanderError(f"Prompt Expander: no model named {name!r} in "
                            f"{', '.join(map(str, model_roots())) or 'models/prompt_expander'}. "
                            "Was it renamed or deleted? Pick one from the list.")
    return found


def resolve_lora(name: str) -> Path:
    found = find_named_folder(lora_roots(), name, "adapter_config.json")
    if found is None:
        raise ExpanderError(f"Prompt Expander: no style adapter named {name!r} in {', '.join(map(str, lora_roots()))}")
    return found


class ExpanderHandle:
    """The PROMPT_EXPANDER value passed between nodes: a resident expander, its patcher and a style stack."""

    def __init__(self, expander, patcher, styles=()):
        self.expander, self.patcher, self.styles = expander, patcher, tuple(styles)

    def with_style(self, path: Path, strength: float) -> "ExpanderHandle":
        return ExpanderHandle(self.expander, self.patcher, self.styles + ((str(path), float(strength)),))

    def ready(self):
        """Ask ComfyUI's memory manager to put the model on its load device, then hand back the expander."""
        import comfy.model_management as mm
        mm.load_models_gpu([self.patcher])
        return self.expander


def pick_device_and_dtype(device: str, dtype: str):
    import comfy.model_management as mm
    load = {"cpu": torch.device("cpu"), "gpu": mm.get_torch_device()}.get(device) or mm.text_encoder_device()
    offload = mm.text_encoder_offload_device() if load.type != "cpu" else torch.device("cpu")
    if dtype == "auto":
        # The core's auto, not fp16 where ComfyUI's text encoders use it: a shared workflow's seed must write the
        # same text on every machine.
        dt = dtype_to_load_for(load)
    else:
        dt = DTYPES[dtype]
    return load, offload, dt


def load_handle(name: str, device: str, dtype: str) -> ExpanderHandle:
    import comfy.model_patcher

    from ..prompt_expander.expansion.resident import load_expander

    folder = resolve_model(name)
    load, offload, dt = pick_device_and_dtype(device, dtype)
    # Loaded onto the offload device; ComfyUI moves it to `load` when a node needs it. Not kept in the
    # core's strong cache: ComfyUI's node cache owns it, so "unload models"/"free cache" really frees it.
    expander = load_expander(str(folder), device=offload, dtype=dt, resident=False)
    patcher = getattr(expander, "_comfy_patcher", None)
    if patcher is None or patcher.load_device != load:
        patcher = comfy.model_patcher.ModelPatcher(PromptExpanderModel(expander.model), load_device=load,
                                                   offload_device=offload)
        expander._comfy_patcher = patcher
    return ExpanderHandle(expander, patcher)
