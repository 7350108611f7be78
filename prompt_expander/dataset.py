"""Tokenised prompt corpora and the deterministic packed-batch order used by every trainer."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .fileio import atomic_path, iter_lines


class TokenizedPrompts:
    """All prompts of a file as one flat token array plus offsets; each is BOS + tokens + EOS."""

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray):
        self.tokens = tokens
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def get(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    @classmethod
    def build(cls, lines, encode_batch, bos_id: int, eos_id: int, max_len: int, batch: int = 4096):
        """`encode_batch(list[str]) -> list[list[int]]`; prompts longer than max_len lose their tail and EOS."""
        chunks, lengths, buf = [], [], []

        def flush():
            for ids in encode_batch(buf):
                ids = [bos_id, *ids[: max_len - 2], eos_id] if len(ids) <= max_len - 2 else [bos_id, *ids[: max_len - 1]]
                chunks.append(np.asarray(ids, dtype=np.int32))
                lengths.append(len(ids))
            buf.clear()

        for line in lines:
            buf.append(line)
            if len(buf) >= batch:
                flush()
        if buf:
            flush()
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int32)
        dtype = np.uint16 if tokens.size == 0 or tokens.max() < 65535 else np.int32
        return cls(tokens.astype(dtype), offsets)

    def save(self, path: str | Path) -> None:
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, tokens=self.tokens, offsets=self.offsets)

    @classmethod
    def load(cls, path: str | Path) -> "TokenizedPrompts":
        with np.load(path) as z:
            return cls(z["tokens"], z["offsets"])


def tokenize_file(path, tokenizer, lowercase: bool, bos_id: int, eos_id: int, max_len: int,
                  cache: str | Path | None = None) -> TokenizedPrompts:
    """Tokenise a prompts file with a transformers tokenizer, caching the arrays next to the run."""
    if cache is not None and Path(cache).exists():
        return TokenizedPrompts.load(cache)
    fast = getattr(tokenizer, "_tokenizer", None)

    def encode_batch(texts):
        texts = [t.lower() for t in texts] if lowercase else texts
        if fast is not None:  # the Rust tokenizer, without the Python per-call overhead
            return [e.ids for e in fast.encode_batch(texts, add_special_tokens=False)]
        return [tokenizer.encode(t, add_special_tokens=False) for t in texts]

    data = TokenizedPrompts.build(iter_lines(path), encode_batch, bos_id, eos_id, max_len)
    if cache is not None:
        data.save(cache)
    return data


def pack_rows(lengths: np.ndarray, order: np.ndarray, row_len: int) -> list[np.ndarray]:
    """Greedily pack whole prompts, in `order`, into rows of at most row_len tokens.

    Every row starts at a BOS, as the expander's context does at inference.
    """
    rows, current, used = [], [], 0
    for i in order.tolist():
        n = int(lengths[i])
        if used + n > row_len and current:
            rows.append(np.asarray(current, dtype=np.int64))
            current, used = [], 0
        current.append(i)
        used += n
    if current:
        rows.append(np.asarray(current, dtype=np.int64))
    return rows


class PackedBatches:
    """Deterministic batches: epoch e shuffles with seed+e, so step k always sees the same rows."""

    def __init__(self, data: TokenizedPrompts, row_len: int, batch_size: int, seed: int, pad_id: int,
                 bos_id: int, shuffle: bool = True):
        self.data, self.row_len, self.batch_size = data, row_len, batch_size
        self.seed, self.pad_id, self.bos_id, self.shuffle = seed, pad_id, bos_id, shuffle
        self._epoch, self._rows = None, None

    def rows_for_epoch(self, epoch: int) -> list[np.ndarray]:
        if self._epoch != epoch:
            n = len(self.data)
            order = np.random.default_rng(self.seed + epoch).permutation(n) if self.shuffle else np.arange(n)
            self._rows, self._epoch = pack_rows(self.data.lengths(), order, self.row_len), epoch
        return self._rows

    def batches_per_epoch(self) -> int:
        return max(1, len(self.rows_for_epoch(0)) // self.batch_size)

    def batch(self, step: int, rank: int = 0, world: int = 1):
        """(input_ids, labels) for a global step; with several processes each takes its share of rows."""
        per_epoch = self.batches_per_epoch()
        epoch, index = divmod(step, per_epoch)
        rows = self.rows_for_epoch(epoch)[index * self.batch_size:(index + 1) * self.batch_size]
        return self.collate(rows[rank::world])

    def collate(self, rows):
        ids = np.full((len(rows), self.row_len), self.pad_id, dtype=np.int64)
        labels = np.full((len(rows), self.row_len), -100, dtype=np.int64)
        for r, members in enumerate(rows):
            seq = np.concatenate([self.data.get(i) for i in members])[: self.row_len]
            ids[r, : len(seq)] = seq
            labels[r, : len(seq)] = seq
        # A BOS is given, never predicted: evaluation scores each prompt alone and must agree.
        labels[ids == self.bos_id] = -100
        return ids, labels

    def all_batches(self):
        """Every row once, in file order (for validation)."""
        rows = self.rows_for_epoch(0)
        for start in range(0, len(rows), self.batch_size):
            yield self.collate(rows[start:start + self.batch_size])
