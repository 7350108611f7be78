"""Tokenised prompt corpora and the deterministic packed-batch order used by every trainer."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..fileio import atomic_path, iter_lines
from ..topics import tagged


def prompts_file(data: str | Path) -> Path:
    """A prompt file, or a `prepare` folder's train.txt; a clear error when there is neither."""
    path = Path(data)
    if path.is_dir():
        path = path / "train.txt"
    if not path.is_file():
        raise DataError(f"{data}: no such prompts file (or `prepare` folder with a train.txt)")
    return path


class TokenizedPrompts:
    """All prompts of a file as one flat token array plus offsets; each is BOS + tokens + EOS."""

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, fingerprint: str = ""):
        self.tokens = tokens
        self.offsets = offsets
        self.fingerprint = fingerprint  # what the arrays were built from (see tokenize_file)

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
            np.savez(tmp, tokens=self.tokens, offsets=self.offsets, fingerprint=np.array(self.fingerprint))

    @classmethod
    def load(cls, path: str | Path) -> "TokenizedPrompts":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["tokens"], z["offsets"], str(z["fingerprint"]) if "fingerprint" in z.files else "")


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes: what a cache built from it must match."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tokenizer_digest(tokenizer) -> str:
    """sha256 of a tokenizer's vocabulary, merges and special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        text = backend.to_str()
    else:
        text = json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def tokenize_file(path, tokenizer, lowercase: bool, bos_id: int, eos_id: int, max_len: int,
                  cache: str | Path | None = None, topic_tags: bool = False) -> TokenizedPrompts:
    """Tokenise a prompts file with a transformers tokenizer, caching the arrays next to the run.

    The cache records what it was built from (the file's bytes, the tokenizer, the settings) and is used only
    when all of them match: a run folder reused for other data rebuilds it rather than train on stale tokens."""
    fingerprint = json.dumps({"file": file_digest(path), "tokenizer": tokenizer_digest(tokenizer),
                              "lowercase": bool(lowercase), "bos": bos_id, "eos": eos_id, "max_len": max_len,
                              "topic_tags": bool(topic_tags)},
                             sort_keys=True)
    if cache is not None and Path(cache).exists():
        cached = TokenizedPrompts.load(cache)
        if cached.fingerprint == fingerprint:
            return cached
        print(f"note: {cache} was built from other data or settings; tokenising {path} again")
    fast = getattr(tokenizer, "_tokenizer", None)

    def encode_batch(texts):
        texts = [tagged(t) for t in texts] if topic_tags else texts
        texts = [t.lower() for t in texts] if lowercase else texts
        if fast is not None:  # the Rust tokenizer, without the Python per-call overhead
            return [e.ids for e in fast.encode_batch(texts, add_special_tokens=False)]
        return [tokenizer.encode(t, add_special_tokens=False) for t in texts]

    data = TokenizedPrompts.build(iter_lines(path), encode_batch, bos_id, eos_id, max_len)
    data.fingerprint = fingerprint
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
    """Deterministic full batches from an endless stream of packed rows.

    Epoch e is the corpus shuffled with seed+e and packed; epochs follow one another in the stream without a
    gap, so a batch that straddles an epoch boundary takes its first rows from one epoch and the rest from the
    next. Every batch is full whatever each epoch packs into, and step k always sees the same rows, which is
    what makes a resumed run identical to an uninterrupted one.
    """

    CACHED_EPOCHS = 2  # a batch spans at most two epochs unless an epoch packs into fewer rows than a batch

    def __init__(self, data: TokenizedPrompts, row_len: int, batch_size: int, seed: int, pad_id: int,
                 bos_id: int, shuffle: bool = True):
        if len(data) == 0:
            from ..errors import DataError
            raise DataError("no prompts to train on: the tokenised corpus is empty")
        self.data, self.row_len, self.batch_size = data, row_len, batch_size
        self.seed, self.pad_id, self.bos_id, self.shuffle = seed, pad_id, bos_id, shuffle
        self._rows: dict[int, list[np.ndarray]] = {}  # the most recently used epochs' packed rows
        self._starts = [0]  # _starts[e]: index in the stream of epoch e's first row

    def rows_for_epoch(self, epoch: int) -> list[np.ndarray]:
        rows = self._rows.pop(epoch, None)
        if rows is None:
            n = len(self.data)
            order = np.random.default_rng(self.seed + epoch).permutation(n) if self.shuffle else np.arange(n)
            rows = pack_rows(self.data.lengths(), order, self.row_len)
        self._rows[epoch] = rows  # most recent last
        while len(self._rows) > self.CACHED_EPOCHS:
            del self._rows[next(iter(self._rows))]
        return rows

    def epoch_start(self, epoch: int) -> int:
        """Stream index of epoch's first row; packs each earlier epoch once to count its rows."""
        while len(self._starts) <= epoch:
            e = len(self._starts) - 1
            self._starts.append(self._starts[-1] + len(self.rows_for_epoch(e)))
        return self._starts[epoch]

    def locate(self, row: int) -> tuple[int, int]:
        """(epoch, index within that epoch) of stream row `row`."""
        epoch = 0
        while self.epoch_start(epoch + 1) <= row:
            epoch += 1
        return epoch, row - self.epoch_start(epoch)

    def batches_per_epoch(self) -> float:
        """Steps in one pass over the corpus (epoch 0's rows / batch size; later epochs differ slightly)."""
        return self.epoch_start(1) / self.batch_size

    def epochs_seen(self, steps: int) -> float:
        """How many passes over the corpus `steps` full batches make, counting each epoch's own rows."""
        epoch, index = self.locate(steps * self.batch_size)
        return epoch + index / (self.epoch_start(epoch + 1) - self.epoch_start(epoch))

    def batch(self, step: int, rank: int = 0, world: int = 1):
        """(input_ids, labels) for a global step; with several processes each takes its share of rows."""
        epoch, index = self.locate(step * self.batch_size)
        rows: list[np.ndarray] = []
        while len(rows) < self.batch_size:
            epoch_rows = self.rows_for_epoch(epoch)
            rows += epoch_rows[index:index + self.batch_size - len(rows)]
            epoch, index = epoch + 1, 0
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
