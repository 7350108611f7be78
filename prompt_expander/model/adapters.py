"""PEFT LoRA adapters as weight deltas: load, check against the base, and mix by weight."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..errors import AdapterError
from .loading import quiet_transformers

ADAPTER_META = "prompt_expander_adapter.json"
# The LoraConfig fields of peft 0.13.2, the newest peft that imports under A1111's transformers 4.30.2.
PORTABLE_LORA_KEYS = frozenset({
    "alpha_pattern", "auto_mapping", "base_model_name_or_path", "bias", "fan_in_fan_out", "inference_mode",
    "init_lora_weights", "layer_replication", "layers_pattern", "layers_to_transform", "loftq_config", "lora_alpha",
    "lora_dropout", "megatron_config", "megatron_core", "modules_to_save", "peft_type", "r", "rank_pattern",
    "revision", "target_modules", "task_type", "use_dora", "use_rslora"})


def _inert(value) -> bool:
    """A config value that means 'feature off', so an older peft can safely ignore the key."""
    return value in (None, False, {}, [], "") or value == 16  # qalora_group_size's default


def portable_config(raw: dict, known: set) -> dict:
    """Keep the keys this peft knows; refuse if a dropped key actually switches a feature on."""
    active = [k for k, v in raw.items() if k not in known and not _inert(v) and k != "peft_version"]
    if active:
        raise AdapterError(f"this adapter uses LoRA features the installed peft does not have ({', '.join(active)});"
                           " upgrade peft, or retrain it without them")
    return {k: v for k, v in raw.items() if k in known}


def write_portable_config(folder) -> None:
    """Rewrite adapter_config.json so that peft 0.13.2 (A1111, Forge) loads an adapter saved by a newer peft."""
    from ..fileio import write_json_atomic
    path = Path(folder) / "adapter_config.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    write_json_atomic(path, portable_config(raw, set(PORTABLE_LORA_KEYS)))


def base_fingerprint(model) -> str:
    """Identifies a base model by its shape and a slice of its embedding weights."""
    cfg = model.config
    h = hashlib.sha256(f"{cfg.model_type}|{cfg.vocab_size}|{getattr(cfg, 'n_embd', '')}|"
                       f"{getattr(cfg, 'n_layer', '')}".encode())
    emb = model.get_input_embeddings().weight
    h.update(emb[:4, :16].detach().float().cpu().numpy().round(4).tobytes())
    return h.hexdigest()[:16]


def base_probe(model) -> dict:
    """What identifies a base model in any dtype: its shape, and embedding weights to compare within the dtype's
    precision. The exact fingerprint cannot: a base run in bf16 on CPU rounds those weights differently."""
    cfg = model.config
    emb = model.get_input_embeddings().weight
    return {"shape": f"{cfg.model_type}|{cfg.vocab_size}|{getattr(cfg, 'n_embd', '')}|{getattr(cfg, 'n_layer', '')}",
            "values": [round(v, 7) for v in emb[:4, :16].detach().float().cpu().flatten().tolist()]}


def fits_base(meta: dict, model) -> bool:
    """Whether an adapter's metadata names this base: by its probe where it has one (train-lora writes it since
    the bf16 CPU decode), else by the exact fingerprint that older adapters carry."""
    probe = meta.get("base_probe")
    if isinstance(probe, dict) and isinstance(probe.get("values"), list):
        have = base_probe(model)
        if probe.get("shape") != have["shape"] or len(probe["values"]) != len(have["values"]):
            return False
        rtol = 2 * torch.finfo(model.get_input_embeddings().weight.dtype).eps
        return torch.allclose(torch.tensor(have["values"], dtype=torch.float64),
                              torch.tensor(probe["values"], dtype=torch.float64), rtol=rtol, atol=1e-6)
    want = meta.get("base_fingerprint")
    return not want or want == base_fingerprint(model)


def adapter_signature(path: Path) -> tuple:
    """What tells one version of an adapter folder's files from another: each file's size and mtime."""
    sig = []
    for name in ("adapter_config.json", "adapter_model.safetensors", ADAPTER_META):
        try:
            st = (Path(path) / name).stat()
            sig.append((name, st.st_size, st.st_mtime_ns))
        except OSError:
            sig.append((name, None, None))
    return tuple(sig)


def read_adapter_config(path: Path) -> dict:
    cfg_file = path / "adapter_config.json"
    if not cfg_file.is_file():
        raise AdapterError(f"{path} is not a LoRA adapter folder (no adapter_config.json)")
    if not (path / "adapter_model.safetensors").is_file():
        pickles = [p.name for p in path.glob("adapter_model.*")]
        why = f" (found {', '.join(pickles)}: pickle files can run code, so only safetensors load)" if pickles else ""
        raise AdapterError(f"{path} has no adapter_model.safetensors{why}")
    try:
        return json.loads(cfg_file.read_text(encoding="utf-8"))
    except ValueError as e:
        raise AdapterError(f"{cfg_file} is not valid JSON: {e}") from None


def load_adapter_deltas(model, path: Path, model_id: str) -> dict[str, torch.Tensor]:
    """_load_adapter_deltas, with peft's and transformers' bars and developer warnings kept off the console."""
    with quiet_transformers():
        return _load_adapter_deltas(model, path, model_id)


def _load_adapter_deltas(model, path: Path, model_id: str) -> dict[str, torch.Tensor]:
    """Load a PEFT LoRA adapter onto `model` with peft, read off each layer's weight delta, and unload it.

    Returns {parameter name in the base model: delta}, in the base weight's layout and dtype float32.
    """
    import dataclasses

    from peft import LoraConfig, PeftModel
    from peft.tuners.lora import LoraLayer

    cfg = read_adapter_config(path)
    config = LoraConfig(**portable_config(cfg, {f.name for f in dataclasses.fields(LoraConfig)}))
    config.inference_mode = True
    base_named = cfg.get("base_model_name_or_path") or "an unnamed base"
    meta_file = path / ADAPTER_META
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if not fits_base(meta, model):
            raise AdapterError(f"adapter {path.name!r} was trained for base {meta.get('base_id', base_named)!r}, "
                               f"but the loaded model is {model_id!r}; load it with its own base")
    name = "pe_" + hashlib.sha1(str(path).encode()).hexdigest()[:8]
    try:
        peft_model = PeftModel.from_pretrained(model, str(path), adapter_name=name, is_trainable=False, config=config)
    except Exception as e:
        _restore(model)
        raise AdapterError(f"adapter {path.name!r} (trained for base {base_named!r}) does not fit the loaded model "
                           f"{model_id!r}: {type(e).__name__}: {str(e)[:200]}") from None
    deltas = {}
    try:
        for module_name, module in peft_model.base_model.model.named_modules():
            if isinstance(module, LoraLayer) and name in getattr(module, "lora_A", {}):
                deltas[module_name + ".weight"] = module.get_delta_weight(name).detach().float().clone()
    finally:
        peft_model.base_model.unload()
    if not deltas:
        raise AdapterError(f"adapter {path.name!r} changed no layer of {model_id!r}")
    return deltas


def _restore(model) -> None:
    """Undo a half-done peft injection so the base model stays usable after a failed load."""
    from peft.tuners.lora import LoraLayer

    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, LoraLayer) and hasattr(child, "base_layer"):
                setattr(parent, child_name, child.base_layer)
