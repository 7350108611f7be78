"""`prompt_expander.json`: what a model folder tells the expander about how it was trained."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import ModelLoadError
from ..limits import MAX_CANDIDATES, MAX_CONTRAST, MAX_CONTRAST_WORDS, MAX_PICK_WORDS

META_FILE = "prompt_expander.json"
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@dataclass
class ModelMeta:
    # Lower-case the context before tokenising (our models are trained on lower-cased prompts).
    lowercase: bool = False
    # Negative-prompt vocabulary file in the model folder; without one the model refuses negative mode.
    negative_vocabulary: str | None = None
    # Words the training corpus writes (gzipped, one per line): the tidy-up drops a modifier with any other word
    # (an invented name, a word cut in two), unless the user wrote it.
    known_words: str | None = None
    # Word vectors learnt from the training corpus (word_vectors.py): the on-topic pick scores candidates with
    # them instead of the model's token embeddings.
    word_vectors: str | None = None
    # An n-gram table of the training prompts (draft_tokens.py): a picked row's decode checks its guesses of the
    # next tokens several at a time. It changes no choice, only how many steps a row takes.
    draft_tokens: str | None = None
    # Trained on topic-tagged prompts (see topics.tagged): the context names the subject before the prompt.
    topic_tags: bool = False
    # The dtype `auto` picks on a CPU that multiplies bf16 natively ("bf16"), else fp32: a decode step streams
    # every weight, so half the bytes is most of twice the speed (docs/benchmarks.md). None: fp32. bf16's text
    # depends on the CPU's kernels (AMX and AVX-512 BF16 round differently); fp32's was the same on every CPU
    # tried, which is why the shipped default asks for fp32.
    cpu_dtype: str | None = None
    # The contrast (concept-contrastive decoding's lambda) an expansion uses when its caller names none.
    contrast: float = 0.0
    # The words of an addition that contrast chooses when the caller names none (ExpandSettings.contrast_words).
    contrast_words: int = 0
    # The on-topic pick an expansion uses when the caller names none (ExpandSettings.candidates and pick_words):
    # a model can ship its best setting, so that hosts and the API get it without knowing it.
    candidates: int = 1
    pick_words: int = 0
    format: str = "prompt-expander/1"

    CPU_DTYPES = ("fp32", "bf16")

    FILE_FIELDS = ("negative_vocabulary", "known_words", "word_vectors", "draft_tokens")  # fields that name a file of the model folder

    @classmethod
    def read(cls, folder: str | Path | None) -> "ModelMeta":
        if folder is None:
            return cls()
        path = Path(folder) / META_FILE
        if not path.is_file():
            return cls()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls()
        if not isinstance(raw, dict):
            raise ModelLoadError(f"{path}: not a JSON object")
        known = {f.name for f in fields(cls)}
        meta = cls(**{k: v for k, v in raw.items() if k in known})
        for flag in ("lowercase", "topic_tags"):
            if not isinstance(getattr(meta, flag), bool):
                raise ModelLoadError(f"{path}: {flag!r} must be true or false, got {getattr(meta, flag)!r}")
        c = meta.contrast
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 <= c <= MAX_CONTRAST:
            raise ModelLoadError(f"{path}: 'contrast' must be a number from 0 to {MAX_CONTRAST}, got {c!r}")
        w = meta.contrast_words
        if isinstance(w, bool) or not isinstance(w, int) or not 0 <= w <= MAX_CONTRAST_WORDS:
            raise ModelLoadError(f"{path}: 'contrast_words' must be a whole number from 0 (every word) to "
                                 f"{MAX_CONTRAST_WORDS}, got {w!r}")
        k = meta.candidates
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_CANDIDATES:
            raise ModelLoadError(f"{path}: 'candidates' must be a whole number from 1 (no pick) to {MAX_CANDIDATES}, "
                                 f"got {k!r}")
        w = meta.pick_words
        if isinstance(w, bool) or not isinstance(w, int) or not 0 <= w <= MAX_PICK_WORDS:
            raise ModelLoadError(f"{path}: 'pick_words' must be a whole number from 0 (the whole addition) to "
                                 f"{MAX_PICK_WORDS}, got {w!r}")
        if meta.cpu_dtype is not None and meta.cpu_dtype not in cls.CPU_DTYPES:
            raise ModelLoadError(f"{path}: 'cpu_dtype' must be one of {cls.CPU_DTYPES}, got {meta.cpu_dtype!r}")
        for name in cls.FILE_FIELDS:
            value = getattr(meta, name)
            if value is not None:
                if not isinstance(value, str) or not value.strip():
                    raise ModelLoadError(f"{path}: {name!r} must be a file name, got {value!r}")
                file_inside(folder, value, name)
        return meta

    def files(self) -> list[str]:
        """The files of the model folder this metadata names."""
        return [getattr(self, name) for name in self.FILE_FIELDS if getattr(self, name)]

    def to_dict(self) -> dict:
        return asdict(self)


def read_card(folder: str | Path) -> dict:
    """A model folder's prompt_expander.json as a dict to update ({} when it has none), for a command that adds a
    file to the folder: read before its minutes of building, so that a broken card fails at once."""
    from ..fileio import read_json
    path = Path(folder) / META_FILE
    try:
        card = read_json(path) if path.is_file() else {}
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{path}: cannot read it ({e})") from None
    if not isinstance(card, dict):
        raise ModelLoadError(f"{path}: not a JSON object")
    return card


def file_inside(folder: str | Path, name: str, what: str) -> Path:
    """`folder / name`, refused unless it resolves inside the folder: a downloaded model's metadata must not
    point at /etc/passwd, at '../secret' or through a symlink that leads out."""
    root = Path(folder).resolve()
    target = (root / name).resolve()
    if Path(name).is_absolute() or not target.is_relative_to(root) or target == root:
        raise ModelLoadError(f"{Path(folder) / META_FILE}: {what} {name!r} points outside the model folder; "
                             "refusing to read it")
    return target


def copy_tokenizer_files(src: str | Path, dst: str | Path, with_meta: bool = True) -> None:
    """Copy a model folder's tokenizer files (and its prompt_expander.json with the files it names) to dst."""
    src, dst = Path(src), Path(dst)
    names, named = list(TOKENIZER_FILES), []
    if with_meta:
        names.append(META_FILE)
        named = ModelMeta.read(src).files()  # read() has checked they stay inside src
        names += named
    for name in names:
        source = file_inside(src, name, "file") if name in named else src / name
        if source.is_file():
            target = file_inside(dst, name, "file") if name in named else dst / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
