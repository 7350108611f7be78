"""A1111/Forge processing logic with no A1111 imports: per-image expansion, infotext keys, paste-back."""
from __future__ import annotations

import math
import traceback
from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import ExpanderError, InputError
from ..limits import MODELS_OWN, or_models_own
from ..paths import BUNDLED_LORAS, DEFAULT_MODEL, find_named_folder, list_adapter_folders, list_model_folders

KEY = "Prompt Expander"  # infotext key holding the model; its presence re-enables the script on paste
KEY_LORA = "Prompt Expander LoRA"
KEY_TEMPERATURE = "Prompt Expander temperature"
KEY_BUDGET = "Prompt Expander budget"
KEY_CONTRAST = "Prompt Expander contrast"
KEY_CANDIDATES = "Prompt Expander candidates"
KEY_PICK_WORDS = "Prompt Expander pick words"
KEY_CONTRAST_WORDS = "Prompt Expander contrast words"
KEY_SEED = "Prompt Expander seed"
KEY_SAFE = "Prompt Expander safe"
KEY_BLOCKLIST = "Prompt Expander blocklist"
KEY_NEGATIVE = "Prompt Expander negative"
KEY_HIRES = "Prompt Expander hires"
KEY_ORIGINAL = "Prompt Expander original"
KEY_ORIGINAL_NEGATIVE = "Prompt Expander original negative"
KEY_ORIGINAL_HIRES = "Prompt Expander original hires"
KEY_ORIGINAL_CUT = "Prompt Expander original cut"
KEY_ERROR = "Prompt Expander error"
# The original prompt is stored for paste-back only up to this length: a 20k-character prompt would otherwise
# double the image's metadata. A cut original is not pasted back (see restore_original).
INFOTEXT_ORIGINAL_MAX = 2000
PASTE_KEYS = (KEY, KEY_LORA, KEY_TEMPERATURE, KEY_BUDGET, KEY_SEED, KEY_SAFE, KEY_BLOCKLIST, KEY_NEGATIVE, KEY_HIRES,
              KEY_CONTRAST, KEY_CANDIDATES, KEY_PICK_WORDS, KEY_CONTRAST_WORDS)
DEFAULT = "default"
NO_LORA = "None"
SEED_PER_IMAGE = "per image (image seed)"
SEED_FIXED = "fixed"


@dataclass
class Options:
    """The script's UI values, in the order the API's alwayson_scripts args take them."""
    enabled: bool = False
    model: str = DEFAULT
    lora: str = NO_LORA
    lora_strength: float = 1.0
    temperature: float = 0.8
    budget: int = 0
    seed_mode: str = SEED_PER_IMAGE
    fixed_seed: int = 0
    safe_mode: bool = True
    blocklist: str = ""
    expand_negative: bool = False
    apply_hires: bool = True
    contrast: float = 0.0  # these last: API callers pass the fields positionally, and older calls stop before them
    candidates: int = MODELS_OWN
    pick_words: int = MODELS_OWN
    contrast_words: int = MODELS_OWN

    @classmethod
    def from_args(cls, args) -> "Options":
        """The options from the script's args, each read as its field's type (an API caller may send "0.8" for
        a number, or null for the default); InputError names the first arg that cannot be read."""
        values = {}
        for field, value in zip(fields(cls), args):
            values[field.name] = field.default if value is None else _read_as(field.name, value, field.default)
        return cls(**values)


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


def _read_as(name: str, value, default):
    kind = type(default)
    try:
        if kind is bool:
            if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
                return value.strip().lower() in _TRUE
            if isinstance(value, (bool, int, float)):
                return bool(value)
        elif kind is int:
            if isinstance(value, str):
                value = value.strip()
                value = int(value) if value.lstrip("+-").isdigit() else float(value)
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # gradio's Number sends 3.0; a seed past 2**53 must come as an int
            if isinstance(value, int):
                return int(value)
        elif kind is float:
            number = float(value)
            if math.isfinite(number):
                return number
        else:
            return str(value)
    except (TypeError, ValueError, OverflowError):
        pass
    what = {bool: "true or false", int: "a whole number", float: "a number"}[kind]
    raise InputError(f"Prompt Expander: {name} must be {what}, got {value!r}")


def model_choices(models_root: Path | None) -> list[str]:
    roots = [models_root] if models_root else []
    return [DEFAULT] + sorted({p.name for p in list_model_folders(*roots)})


def lora_roots(models_root: Path | None) -> list[Path]:
    return [BUNDLED_LORAS] + ([Path(models_root) / "loras"] if models_root else [])


def lora_choices(models_root: Path | None) -> list[str]:
    return [NO_LORA] + sorted({p.name for p in list_adapter_folders(*lora_roots(models_root))})


def resolve_model(name: str, models_root: Path | None) -> Path:
    if name in (DEFAULT, "", None):
        return DEFAULT_MODEL
    found = find_named_folder([models_root] if models_root else [], name, "config.json")
    if found is None:
        raise ExpanderError(f"no Prompt Expander model named {name!r} in {models_root}")
    return found


def styles_for(opts: Options, models_root: Path | None) -> list:
    if not opts.lora or opts.lora == NO_LORA or not opts.lora_strength:
        return []
    found = find_named_folder(lora_roots(models_root), opts.lora, "adapter_config.json")
    if found is None:
        raise ExpanderError(f"no Prompt Expander style {opts.lora!r}")
    return [(str(found), float(opts.lora_strength))]


def seed_for(opts: Options, image_seed: int) -> int:
    return int(opts.fixed_seed) if opts.seed_mode == SEED_FIXED else int(image_seed)


def expand_prompts(expander, prompts, seeds, opts: Options, styles, negative=False, count=None) -> list[str]:
    """Each prompt with its own seed, one at a time: image i never depends on the batch around it."""
    memo: dict = {}
    out = []
    for text, seed in zip(prompts, seeds):
        if not text or not text.strip():
            out.append(text)
            continue
        key = (text, seed)
        if key not in memo:
            memo[key] = expander.expand(text, seed, styles=styles, temperature=float(opts.temperature),
                                        budget=int(opts.budget), safe_mode=bool(opts.safe_mode),
                                        blocklist=opts.blocklist, negative=negative, count=count,
                                        contrast=0.0 if negative else float(opts.contrast),
                                        candidates=or_models_own(int(opts.candidates)),
                                        pick_words=or_models_own(int(opts.pick_words)),
                                        contrast_words=or_models_own(opts.contrast_words)).text
        out.append(memo[key])
    return out


def apply_to_processing(p, expander, opts: Options, models_root: Path | None = None, count=None) -> None:
    """Rewrite p.all_prompts (and hires/negative prompts when asked) in place, and record infotext."""
    seeds = [seed_for(opts, s) for s in p.all_seeds]
    styles = styles_for(opts, models_root)
    originals = list(p.all_prompts)
    negatives = list(getattr(p, "all_negative_prompts", None) or [])
    if not any(t and t.strip() for t in originals) and not (opts.expand_negative and any(t and t.strip()
                                                                                            for t in negatives)):
        return  # nothing to expand: write no keys, so pasting this image back leaves the script off
    expanded = expand_prompts(expander, originals, seeds, opts, styles, count=count)
    p.all_prompts = expanded
    params = p.extra_generation_params
    params[KEY] = opts.model or DEFAULT
    if styles:
        params[KEY_LORA] = f"{opts.lora}:{float(opts.lora_strength):g}"
    params[KEY_TEMPERATURE] = float(opts.temperature)
    params[KEY_BUDGET] = int(opts.budget)
    if float(opts.contrast):
        params[KEY_CONTRAST] = float(opts.contrast)
    if opts.contrast_words != MODELS_OWN and float(opts.contrast):
        params[KEY_CONTRAST_WORDS] = int(opts.contrast_words)
    if int(opts.candidates) != MODELS_OWN:
        params[KEY_CANDIDATES] = int(opts.candidates)
    if int(opts.pick_words) != MODELS_OWN:
        params[KEY_PICK_WORDS] = int(opts.pick_words)
    params[KEY_SEED] = "image" if opts.seed_mode != SEED_FIXED else int(opts.fixed_seed)
    if not opts.safe_mode:
        params[KEY_SAFE] = False
    if opts.blocklist and opts.blocklist.strip():
        params[KEY_BLOCKLIST] = opts.blocklist.strip()
    params[KEY_ORIGINAL] = [o[:INFOTEXT_ORIGINAL_MAX] for o in originals]  # item i goes to image i's infotext
    if any(len(o) > INFOTEXT_ORIGINAL_MAX for o in originals):
        params[KEY_ORIGINAL_CUT] = [f"first {INFOTEXT_ORIGINAL_MAX} of {len(o)} characters"
                                    if len(o) > INFOTEXT_ORIGINAL_MAX else "" for o in originals]
    if getattr(p, "enable_hr", False) and getattr(p, "all_hr_prompts", None) is not None:
        hr_originals = list(p.all_hr_prompts)
        if opts.apply_hires:
            # The hires prompt usually equals the prompt: reuse that expansion, so both passes agree.
            # Only the hires prompts that differ are expanded: each expansion of a long prompt costs time.
            differ = [i for i, (h, o) in enumerate(zip(hr_originals, originals)) if h != o]
            own = dict(zip(differ, expand_prompts(expander, [hr_originals[i] for i in differ],
                                                  [seeds[i] for i in differ], opts, styles, count=count)))
            p.all_hr_prompts = [own.get(i, e) for i, e in enumerate(expanded)]
            if any(h != o for h, o in zip(hr_originals, originals)):
                params[KEY_ORIGINAL_HIRES] = hr_originals
        else:
            params[KEY_HIRES] = False
    if opts.expand_negative:
        neg_originals = list(p.all_negative_prompts)
        p.all_negative_prompts = expand_prompts(expander, neg_originals, seeds, opts, styles, negative=True)
        params[KEY_NEGATIVE] = True
        params[KEY_ORIGINAL_NEGATIVE] = neg_originals
        if getattr(p, "enable_hr", False) and getattr(p, "all_hr_negative_prompts", None) is not None and opts.apply_hires:
            p.all_hr_negative_prompts = expand_prompts(expander, list(p.all_hr_negative_prompts), seeds, opts, styles,
                                                       negative=True)
    if p.all_prompts:
        p.main_prompt = p.all_prompts[0]
        if opts.expand_negative:
            p.main_negative_prompt = p.all_negative_prompts[0]


def process_safely(p, get_expander, opts: Options, models_root=None, count=None, log=print) -> bool:
    """apply_to_processing, but an error is printed and written to the infotext instead of being lost
    (A1111 swallows exceptions raised in process() and still returns the unexpanded images)."""
    try:
        apply_to_processing(p, get_expander(), opts, models_root, count)
        return True
    except Exception as e:  # noqa: BLE001 - every failure must reach the user, none may kill the job
        report_error(p, e, log)
        return False


def report_error(p, error: Exception, log=print) -> None:
    message = str(error) if isinstance(error, ExpanderError) else f"{type(error).__name__}: {error}"
    log(f"[Prompt Expander] expansion skipped: {message}")
    if not isinstance(error, ExpanderError):
        log(traceback.format_exc())
    p.extra_generation_params[KEY_ERROR] = message


def enabled_options(p, args, log=print) -> Options | None:
    """The script's options when it is on; None when it is off, or when an arg cannot be read (an API call's
    "temperature": "hot"): then the error is printed and written to the infotext, and the job runs unexpanded."""
    try:
        if not args or args[0] is None or not _read_as("enabled", args[0], False):
            return None
        return Options.from_args(args)
    except InputError as e:
        report_error(p, e, log)
        return None


def restore_original(params: dict) -> None:
    """on_infotext_pasted: put the user's original prompts back, so Generate expands them again the same way."""
    if KEY not in params:
        return
    if params.get(KEY_ORIGINAL_CUT):
        # The original was too long to store whole: the expanded prompt stays, as it is, with the script off
        # (the "enabled" reader sees this key), so Generate makes the same image instead of expanding it again.
        for key in (KEY_ORIGINAL, KEY_ORIGINAL_NEGATIVE, KEY_ORIGINAL_HIRES):
            params.pop(key, None)
        return
    for key, field in ((KEY_ORIGINAL, "Prompt"), (KEY_ORIGINAL_NEGATIVE, "Negative prompt"),
                       (KEY_ORIGINAL_HIRES, "Hires prompt")):
        if key in params:
            params[field] = params[key]
    if KEY_ORIGINAL in params and KEY_ORIGINAL_HIRES not in params:
        params.pop("Hires prompt", None)  # it was the expansion of the prompt; it will be expanded again


def _pasted(key: str, kind=float, absent=None):
    """A reader of one number from a pasted infotext. None (the host then leaves the field as it is) for a value
    edited into nonsense, rather than an error that older hosts let stop the whole paste; `absent` when the
    key is missing."""
    def read(d: dict):
        if key not in d:
            return absent
        try:
            return kind(d[key])
        except (TypeError, ValueError, OverflowError):
            return None
    return read


def _whole(value) -> int:
    number = float(value)  # "75.0" too, as the host reads a slider's value
    if not number.is_integer():
        raise ValueError(value)
    return int(number)


def _pasted_lora_strength(d: dict) -> float | None:
    try:
        return float(d[KEY_LORA].rsplit(":", 1)[-1]) if KEY_LORA in d else 1.0
    except (AttributeError, ValueError):
        return None


def _pasted_seed(d: dict) -> int:
    seed = str(d.get(KEY_SEED, "image")).strip()
    return int(seed) if seed.lstrip("-").isdigit() else 0


def infotext_keys() -> dict:
    """UI field name -> infotext key (and how to read it back) for the script's infotext_fields."""
    return {
        "enabled": lambda d: KEY in d and not d.get(KEY_ORIGINAL_CUT),
        "model": KEY,
        "lora": lambda d: d.get(KEY_LORA, NO_LORA).rsplit(":", 1)[0] if KEY in d else NO_LORA,
        "lora_strength": _pasted_lora_strength,
        "temperature": _pasted(KEY_TEMPERATURE),
        "budget": _pasted(KEY_BUDGET, _whole),
        "seed_mode": lambda d: SEED_FIXED if str(d.get(KEY_SEED, "image")) != "image" else SEED_PER_IMAGE,
        "fixed_seed": _pasted_seed,
        "safe_mode": lambda d: str(d.get(KEY_SAFE, "True")) != "False",
        "blocklist": lambda d: d.get(KEY_BLOCKLIST, ""),
        "expand_negative": lambda d: str(d.get(KEY_NEGATIVE, "False")) == "True",
        "apply_hires": lambda d: str(d.get(KEY_HIRES, "True")) != "False",
        "contrast": _pasted(KEY_CONTRAST, float, 0.0),  # not written when off
        "candidates": _pasted(KEY_CANDIDATES, _whole, MODELS_OWN),
        "pick_words": _pasted(KEY_PICK_WORDS, _whole, MODELS_OWN),
        "contrast_words": _pasted(KEY_CONTRAST_WORDS, _whole, MODELS_OWN),
    }
