"""`prompt_expander.json`: what a model folder tells the expander about how it was trained."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import ModelLoadError

META_FILE = "prompt_expander.json"
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@dataclass
class ModelMeta:
    # Lower-case the context before tokenising (our models are trained on lower-cased prompts).
    lowercase: bool = False
    # Negative-prompt vocabulary file in the model folder; without one the model refuses negative mode.
    negative_vocabulary: str | None = None
    # Trained on topic-tagged prompts (see topics.tagged): the context names the subject before the prompt.
    topic_tags: bool = False
    format: str = "prompt-expander/1"

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
        if meta.negative_vocabulary is not None:
            if not isinstance(meta.negative_vocabulary, str) or not meta.negative_vocabulary.strip():
                raise ModelLoadError(f"{path}: 'negative_vocabulary' must be a file name, "
                                     f"got {meta.negative_vocabulary!r}")
            file_inside(folder, meta.negative_vocabulary, "negative_vocabulary")
        return meta

    def to_dict(self) -> dict:
        return asdict(self)


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
    names, negative = list(TOKENIZER_FILES), None
    if with_meta:
        names.append(META_FILE)
        negative = ModelMeta.read(src).negative_vocabulary  # read() has checked it stays inside src
        if negative:
            names.append(negative)
    for name in names:
        source = file_inside(src, name, "file") if name == negative else src / name
        if source.is_file():
            target = file_inside(dst, name, "file") if name == negative else dst / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
