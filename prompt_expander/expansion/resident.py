"""Resident expanders: one loaded model per folder, device and dtype, found again by every later call."""
from __future__ import annotations

import gc
import threading
import weakref

import torch

from ..errors import ModelLoadError
from ..model.loading import (check_weights, folder_signature, load_model, load_tokenizer, resolve_device,
                             resolve_dtype, resolve_model_folder)
from ..model.meta import ModelMeta
from .expander import Expander

_cache: dict[tuple, "object"] = {}
_weak_cache: "weakref.WeakValueDictionary[tuple, object]" = weakref.WeakValueDictionary()
_lock = threading.RLock()


_cpu_dtypes: dict[tuple, str | None] = {}


def _cpu_dtype(folder, signature) -> str | None:
    """The model card's cpu_dtype, read once per version of the folder's files: a warm call reads no file."""
    key = (str(folder), signature)
    if key not in _cpu_dtypes:
        _cpu_dtypes[key] = ModelMeta.read(folder).cpu_dtype
    return _cpu_dtypes[key]


def load_expander(name_or_path=None, device="cpu", dtype="auto", resident: bool = True):
    """The resident Expander for a model; a second call with the same files, device and dtype is a dict lookup.

    resident=False lets a host own the model: it is found again while the host holds a reference and is
    freed when the host drops it (ComfyUI's node cache).
    """
    folder, model_id = resolve_model_folder(name_or_path)
    dev = resolve_device(device)
    signature = folder_signature(folder)
    asks_model = dtype in (None, "auto") and dev.type == "cpu" and folder.is_dir()
    dt = resolve_dtype(dtype, dev, _cpu_dtype(folder, signature) if asks_model else None)
    key = (str(folder), signature, str(dev), str(dt))
    with _lock:
        hit = _cache.get(key) or _weak_cache.get(key)
        if hit is not None:
            if resident:
                _cache[key] = hit
            return hit
        for table in (_cache, _weak_cache):  # the files changed on disk: drop the old copy first
            for k in [k for k in list(table.keys()) if k[0] == key[0] and k[2:] == key[2:]]:
                del table[k]
        if not folder.is_dir():
            raise ModelLoadError(f"{folder} is not a folder")
        check_weights(folder)
        tokenizer = load_tokenizer(folder)
        model = load_model(folder, dev, dt)
        exp = Expander(model, tokenizer, folder, model_id)
        _weak_cache[key] = exp
        if resident:
            _cache[key] = exp
        return exp


def cached_expanders() -> list:
    with _lock:
        return list({id(v): v for v in [*_cache.values(), *_weak_cache.values()]}.values())


def unload(expander=None) -> int:
    """Drop one resident model (or all of them); returns how many were freed."""
    with _lock:
        keys = [k for k, v in _cache.items() if expander is None or v is expander]
        for k in keys:
            del _cache[k]
        for k in [k for k, v in _weak_cache.items() if expander is None or v is expander]:
            del _weak_cache[k]
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return len(keys)
