"""Loading GPT-2-family models and their tokenizers from safetensors folders or the hub."""
from __future__ import annotations

import contextlib
import os
import re
import warnings
from pathlib import Path

import torch

from ..errors import ModelLoadError, UnsafeWeightsError
from ..paths import DEFAULT_MODEL, user_models_dir

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A torch device that exists here, or a ModelLoadError that says which ones do."""
    if device in (None, "auto", "gpu"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if device == "gpu" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ModelLoadError(f"unknown device {device!r}; use cpu, cuda, cuda:N, mps or auto") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r} asked for, but this torch sees no CUDA GPU; use cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(f"device {device!r}: there are only {torch.cuda.device_count()} CUDA GPU(s)")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelLoadError(f"device {device!r} asked for, but MPS is not available here; use cpu or auto")
    elif dev.type == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise ModelLoadError(f"device {device!r} asked for, but no XPU is available here; use cpu or auto")
    elif dev.type not in ("cpu", "cuda", "mps", "xpu"):
        raise ModelLoadError(f"device {device!r} is not supported; use cpu, cuda, cuda:N, mps or auto")
    return dev


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX-512 BF16 or AMX); elsewhere bf16 is emulated and slower."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, probe, None)
        try:
            if check is not None and check():
                return True
        except Exception:  # a torch build without the probe's kernels
            pass
    return False


def resolve_dtype(dtype, device: torch.device, cpu_dtype: str | None = None) -> torch.dtype:
    """The dtype to load in. `auto` is fp32 on every device, except that a model whose card asks for
    `cpu_dtype: bf16` gets bf16 on a CPU that runs it natively (see ModelMeta.cpu_dtype).

    fp32 on a GPU too, because a seed must write the same prompt on the machine a workflow is shared to: fp16
    text differed from fp32 text for 53 of 90 seeds on the shipped default, while fp32 rounds a million times
    finer. The model is small enough that neither its memory nor its speed is worth that."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cpu" and cpu_dtype == "bf16" and cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use auto, fp32, fp16 or bf16")
    return DTYPES[dtype]


def dtype_to_load_for(device: torch.device):
    """The dtype a host asks for when it loads on the CPU and moves the model to `device` later: `auto` resolved
    on the CPU would give a model whose card says `cpu_dtype: bf16` bf16 on the GPU too, so a GPU gets auto's fp32."""
    return "auto" if torch.device(device).type == "cpu" else torch.float32


def check_weights(folder: Path) -> None:
    files = [p.name for p in folder.iterdir() if p.is_file()]
    if any(f.endswith(".safetensors") for f in files):
        return
    pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise UnsafeWeightsError(
            f"{folder} has only pickle weights ({', '.join(sorted(pickles))}). Pickle files can run arbitrary "
            "code when loaded, so Prompt Expander loads safetensors only. Convert once where you trust the file:\n"
            "  python -c \"from transformers import AutoModelForCausalLM as M; "
            f"M.from_pretrained(r'{folder}').save_pretrained(r'{folder}', safe_serialization=True)\"")
    raise ModelLoadError(f"{folder} has no model weights (expected model.safetensors)")


def _download(repo_id: str) -> Path:
    """Fetch a hub model into the normal Hugging Face cache (safetensors and tokenizer files only)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover
        raise ModelLoadError(f"{repo_id!r} is not a folder and huggingface_hub is missing") from None
    patterns = ["*.json", "*.safetensors", "*.txt", "*.model"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=_offline()))
    except Exception:
        try:
            return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
        except Exception:
            target = user_models_dir() / repo_id.split("/")[-1]
            raise ModelLoadError(
                f"model {repo_id!r} is not in the Hugging Face cache and the hub cannot be reached (offline?). "
                f"Download the model folder (config.json, model.safetensors, tokenizer files) and put it at "
                f"{target}, or pass its folder path.") from None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or \
        os.environ.get("TRANSFORMERS_OFFLINE", "0") not in ("0", "", "false")


def resolve_model_folder(name_or_path: str | os.PathLike | None) -> tuple[Path, str]:
    """(local folder, model id for metadata). None means the bundled default model."""
    if name_or_path in (None, "", "default"):
        if not (DEFAULT_MODEL / "config.json").is_file():
            raise ModelLoadError(
                f"the default model is missing from {DEFAULT_MODEL}. It is produced by "
                "`python -m prompt_expander train-base` (see models/README.md); pass --model PATH|HUB_ID meanwhile.")
        return DEFAULT_MODEL, "default"
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.resolve(), path.name
    for root in (user_models_dir(),):
        if (root / str(name_or_path)).is_dir():
            return (root / str(name_or_path)).resolve(), str(name_or_path)
    if _HUB_ID.match(str(name_or_path)) and not path.exists():
        return _download(str(name_or_path)), str(name_or_path)
    raise ModelLoadError(f"no model folder {str(name_or_path)!r} (and it is not a hub id like 'org/name')")


def folder_signature(folder: Path) -> tuple:
    """(name, size, mtime) of the folder's files: a changed file means a fresh load."""
    try:
        return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()))
    except OSError as e:
        raise ModelLoadError(f"cannot read {folder}: {e}") from None


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer, GPT2TokenizerFast

    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ModelLoadError(f"{folder} has no tokenizer (expected tokenizer.json, or vocab.json + merges.txt)")
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    except Exception as first:
        try:
            tok = GPT2TokenizerFast.from_pretrained(str(folder))
        except Exception:
            raise ModelLoadError(f"cannot load the tokenizer in {folder}: {first}") from None
    if tok.eos_token_id is None:
        raise ModelLoadError(f"the tokenizer in {folder} has no EOS token")
    return tok


@contextlib.contextmanager
def quiet_transformers():
    """transformers' "Loading weights" bar and info logs off while we load, and put back as the host had them:
    a resident model loads silently, and the host's own loads keep their bars."""
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # peft's and transformers' notes to developers
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar_was_on:
            hf_logging.enable_progress_bar()


def load_model(folder: Path, device: torch.device, dtype: torch.dtype):
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    except Exception as e:
        raise ModelLoadError(f"cannot read {folder / 'config.json'}: {e}") from None
    dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    try:
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(str(folder), config=config, use_safetensors=True,
                                                         trust_remote_code=False, **{dtype_kw: dtype})
    except ImportError as e:
        # transformers imports its model classes lazily, and a broken package beside it (a CUDA torchvision
        # wheel on CPU torch, say) fails here: the weights are fine, and the fix is in the Python environment.
        raise ModelLoadError(f"transformers {transformers.__version__} could not import its model code in this "
                             f"Python, so {folder} was not loaded (a broken or mismatched package installed beside "
                             f"it?): {type(e).__name__}: {str(e)[:300]}") from None
    except Exception as e:
        raise ModelLoadError(f"cannot load the weights in {folder} (corrupt or incomplete file?): "
                             f"{type(e).__name__}: {str(e)[:300]}") from None
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model
