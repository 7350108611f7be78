"""Word vectors learnt from the training prompts (PPMI + SVD): which words a prompt writes near which others."""
from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from pathlib import Path
from typing import Iterable

import torch

from .errors import ModelLoadError
from .fileio import atomic_path, iter_lines, plain_file_mode

WORD_VECTORS_FILE = "word_vectors.safetensors"
FORMAT = "prompt-expander-word-vectors/1"

_WORD = re.compile(r"\b[^\W\d_]+(?:['’][^\W\d_]+)*\b")  # whole words: no 'k' out of '8k'

# Measured on the on-topic pick (docs/specificity.md, twentieth session): 64 dimensions over the 20,000
# commonest words did as well as 128 or 256 over 50,000, and a window of 5 words across commas as well as one
# kept inside a comma segment.
WINDOW = 5
DIMENSIONS = 64
MAX_WORDS = 20_000
MIN_COUNT = 10
# Smooth inverse frequency (Arora et al. 2017): a word of corpus frequency p weighs a / (a + p) in a text's
# vector, so "of", "by" and "detailed" count for little. 1e-3 beat 1e-4 on PartiPrompts (0.063 against 0.061).
SIF_A = 1e-3
_CONTEXT_POWER = 0.75  # the smoothed context distribution of word2vec, which keeps rare contexts from dominating
_CHUNK_LINES = 200_000


def words_of(text: str) -> list[str]:
    """The lower-cased words of a text, as the vectors were counted."""
    return _WORD.findall(text.lower())


def build_word_vectors(corpus: str | Path, window: int = WINDOW, dimensions: int = DIMENSIONS,
                       max_words: int = MAX_WORDS, min_count: int = MIN_COUNT, seed: int = 0) -> "WordVectors | None":
    """Count which words come within `window` words of each other in the same prompt of a prompt file
    (weighted 1/distance), turn the counts into positive pointwise mutual information and keep its top
    `dimensions` singular directions. None when the corpus has too few words for it. Reads the file twice
    rather than holding its words (60M of them for our corpus)."""
    counts = Counter(w for line in iter_lines(corpus) for w in words_of(line))
    words = [w for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count][:max_words]
    if len(words) < 3:
        return None
    index = {w: i for i, w in enumerate(words)}
    n = len(words)
    total = _sparse(torch.empty(2, 0, dtype=torch.long), torch.empty(0, dtype=torch.float64), n)
    for chunk in _chunks(iter_lines(corpus), _CHUNK_LINES):
        total = (total + _cooccurrences(chunk, index, window)).coalesce()
    vectors = _ppmi_svd(total, min(dimensions, n - 1), seed)
    return WordVectors(words, vectors, torch.tensor([counts[w] for w in words], dtype=torch.float64))


def _chunks(lines: Iterable[str], size: int) -> Iterable[list[str]]:
    it = iter(lines)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _sparse(indices: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    return torch.sparse_coo_tensor(indices, values, (n, n), check_invariants=True).coalesce()


def _cooccurrences(lines: list[str], index: dict, window: int) -> torch.Tensor:
    ids, line_of = [], []
    for k, line in enumerate(lines):
        for w in words_of(line):
            i = index.get(w)
            if i is not None:
                ids.append(i)
                line_of.append(k)
    ids, line_of = torch.tensor(ids, dtype=torch.long), torch.tensor(line_of, dtype=torch.long)
    rows, cols, weights = [], [], []
    for d in range(1, window + 1):
        same = line_of[d:] == line_of[:-d]
        a, b = ids[:-d][same], ids[d:][same]
        rows += [a, b]
        cols += [b, a]  # symmetric: a word's left and right neighbours count alike
        weights += [torch.full((2 * len(a),), 1.0 / d, dtype=torch.float64)]
    return _sparse(torch.stack([torch.cat(rows), torch.cat(cols)]), torch.cat(weights), len(index))


def _ppmi_svd(counts: torch.Tensor, dimensions: int, seed: int) -> torch.Tensor:
    (rows, cols), values = counts.indices(), counts.values()
    n = counts.shape[0]
    total = values.sum()
    row_sums = torch.zeros(n, dtype=torch.float64).index_add_(0, rows, values)
    context = row_sums ** _CONTEXT_POWER
    context = context / context.sum()
    pmi = torch.log(values / total / (row_sums[rows] / total * context[cols]))
    keep = pmi > 0
    ppmi = _sparse(torch.stack([rows[keep], cols[keep]]), pmi[keep].float(), n)
    # The randomised SVD draws its start: seeded, so that the same corpus gives the same vectors.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        u, s, _ = torch.svd_lowrank(ppmi, q=dimensions, niter=6)
    return u * s.sqrt()


class WordVectors:
    """Unit word vectors and the weights a text's vector gives them (smooth inverse frequency)."""

    def __init__(self, words: list[str], vectors: torch.Tensor, counts: torch.Tensor, sif_a: float = SIF_A):
        self.words, self.counts = list(words), counts
        self.index = {w: i for i, w in enumerate(self.words)}
        self.vectors = torch.nn.functional.normalize(vectors.float(), dim=-1)
        freq = counts.double() / counts.sum()
        self.weights = (sif_a / (sif_a + freq)).float()
        # The direction every text shares (the words weighted as the corpus writes them), taken out of each
        # text's vector, as the token picker takes out the vocabulary's mean.
        self.centre = (self.vectors * freq.float()[:, None]).sum(0)

    def text_vectors(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit vectors of many texts at once, [n, dimensions], and which texts had known words (the others'
        rows are zero)."""
        out = torch.zeros(len(texts), self.vectors.shape[1])
        ok = torch.zeros(len(texts), dtype=torch.bool)
        for k, text in enumerate(texts):
            ids = [self.index[w] for w in words_of(text) if w in self.index]
            if ids:
                ids = torch.tensor(ids)
                w = self.weights[ids]
                mean = (self.vectors[ids] * w[:, None]).sum(0) / w.sum()
                out[k] = torch.nn.functional.normalize(mean - self.centre, dim=-1)
                ok[k] = True
        return out, ok

    def save(self, path: str | Path, **info) -> None:
        """One safetensors file, written atomically; the word list and settings go in its metadata."""
        from safetensors.torch import save_file
        metadata = {"format": FORMAT, "words": json.dumps(self.words, ensure_ascii=False),
                    **{k: json.dumps(v) for k, v in info.items()}}
        with atomic_path(path, suffix=".safetensors") as tmp:
            save_file({"vectors": self.vectors.half().contiguous(), "counts": self.counts.double().contiguous()},
                      str(tmp), metadata=metadata)
            plain_file_mode(tmp)  # safetensors writes a new file, private to its owner

    @classmethod
    def load(cls, path: str | Path) -> "WordVectors":
        from safetensors import safe_open
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                if metadata.get("format") != FORMAT:
                    raise ModelLoadError(f"{path}: not a word-vectors file (format {metadata.get('format')!r})")
                words = json.loads(metadata["words"])
                vectors, counts = f.get_tensor("vectors"), f.get_tensor("counts")
        except ModelLoadError:
            raise
        except Exception as e:  # a truncated or foreign file: say which, never crash the host
            raise ModelLoadError(f"{path}: cannot read word vectors ({e})") from e
        if (not isinstance(words, list) or vectors.ndim != 2 or len(words) != len(vectors)
                or counts.shape != (len(words),)):
            raise ModelLoadError(f"{path}: word list, vectors and counts do not match")
        return cls(words, vectors, counts)
