"""`prompt_expander.json`: what a model folder tells the expander about how it was trained."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

META_FILE = "prompt_expander.json"
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@dataclass
class ModelMeta:
    # Lower-case the context before tokenising (our models are trained on lower-cased prompts).
    lowercase: bool = False
    # Negative-prompt vocabulary file in the model folder; without one the model refuses negative mode.
    negative_vocabulary: str | None = None
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
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)


def copy_tokenizer_files(src: str | Path, dst: str | Path, with_meta: bool = True) -> None:
    """Copy a model folder's tokenizer files (and its prompt_expander.json with the files it names) to dst."""
    src, dst = Path(src), Path(dst)
    names = list(TOKENIZER_FILES)
    if with_meta:
        names.append(META_FILE)
        negative = ModelMeta.read(src).negative_vocabulary
        if negative:
            names.append(negative)
    for name in names:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
