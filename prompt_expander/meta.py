"""`prompt_expander.json`: what a model folder tells the expander about how it was trained."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

META_FILE = "prompt_expander.json"


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
