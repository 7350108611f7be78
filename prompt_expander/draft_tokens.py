"""Draft tokens: an n-gram table of the training prompts that guesses a row's next tokens, for the decode to check."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .errors import ModelLoadError
from .fileio import atomic_path, plain_file_mode

DRAFT_TOKENS_FILE = "draft_tokens.safetensors"
FORMAT = "prompt-expander-draft-tokens/1"

ORDERS = (1, 2, 3)  # tokens of context: a prompt's phrases ("by greg rutkowski") are mostly within 4 tokens
# Measured on the default model's additions for 40 PartiPrompts (twenty-sixth session): 50,000 entries per order
# saved as many steps as 100,000 or 200,000 (859 checks against 863 and 872), 10,000 a few fewer (880), the
# table of order 1 alone 1001. The file is 1.1 MB.
MAX_ENTRIES = 50_000
# Tokens guessed ahead per step. Timed on 12 expansions of the default (6 subjects, 2 seeds), paired: 2 guesses
# took 0.944 of 4's time, 1 guess 0.953, 3 0.981, 6 1.071. A further guess is seldom right (1.67 tokens a step
# with 2, 1.75 with 4) and each position costs the step about a tenth more.
DRAFT_LENGTH = 2
_CHUNK = 20_000_000  # positions counted at a time: bounds the counting's memory whatever the corpus


def _keys(tokens: np.ndarray, order: int, vocab: int, bos: int, eos: int) -> np.ndarray:
    """context * vocab + next for every position of a flat token array (prompts each BOS ... EOS) whose `order`
    tokens of context lie inside one prompt, as a decode sees them: BOS only first, no EOS."""
    j = np.arange(order, len(tokens))
    ok = tokens[j] != bos
    key = np.zeros(len(j), dtype=np.int64)
    for i in range(order):
        t = tokens[j - order + i].astype(np.int64)
        ok &= t != eos
        if i:
            ok &= t != bos
        key = key * vocab + t
    return (key * vocab + tokens[j])[ok]


def count_ngrams(tokens: np.ndarray, order: int, vocab: int, bos: int, eos: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique (context * vocab + next) keys and how often each occurs."""
    keys, counts = [], []
    for start in range(0, len(tokens), _CHUNK):
        # overlap by `order` so that no window is lost at a chunk's edge
        part = tokens[max(0, start - order):start + _CHUNK]
        k, c = np.unique(_keys(part, order, vocab, bos, eos), return_counts=True)
        keys.append(k)
        counts.append(c)
    if len(keys) == 1:
        return keys[0], counts[0].astype(np.int64)
    k, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    return k, np.bincount(inverse, weights=np.concatenate(counts)).astype(np.int64)


class DraftTable:
    """Per order n, sorted contexts (the last n tokens, as one integer) and the token that most often follows.

    A guess never changes what a decode writes: the decode computes the model's logits at every guessed
    position in one step and keeps the guesses only while they are what the row chooses from those logits,
    so a good table saves steps and a bad one costs a few rows of arithmetic."""

    per_step = DRAFT_LENGTH  # guesses a decode checks in each step

    def __init__(self, vocab_size: int, contexts: dict[int, np.ndarray], nexts: dict[int, np.ndarray]):
        self.vocab_size = int(vocab_size)
        self.contexts = {n: np.ascontiguousarray(c, dtype=np.int64) for n, c in contexts.items()}
        self.nexts = {n: np.ascontiguousarray(x, dtype=np.int64) for n, x in nexts.items()}
        self.orders = sorted(self.contexts, reverse=True)

    def __len__(self) -> int:
        return sum(len(c) for c in self.contexts.values())

    def next_token(self, history: list[int]) -> int | None:
        """The likeliest next token after `history` by the longest context the table knows; None if none."""
        v = self.vocab_size
        for n in self.orders:
            contexts = self.contexts[n]
            if len(history) < n or not len(contexts):
                continue
            key = 0
            for t in history[-n:]:
                key = key * v + int(t)
            i = int(np.searchsorted(contexts, key))
            if i < len(contexts) and contexts[i] == key:
                return int(self.nexts[n][i])
        return None

    def propose(self, history: list[int], k: int) -> list[int]:
        """Up to k tokens guessed one after another from the end of `history`."""
        guess, h = [], list(history[-max(self.orders, default=1):])
        while len(guess) < k:
            t = self.next_token(h)
            if t is None:
                break
            guess.append(t)
            h = h[1:] + [t]
        return guess

    @classmethod
    def build(cls, tokens: np.ndarray, vocab_size: int, bos: int, eos: int, orders=ORDERS,
              max_entries: int = MAX_ENTRIES) -> "DraftTable":
        """From a flat token array of prompts (each BOS ... EOS): for order 1 every context seen; for each higher
        order the `max_entries` contexts whose own guess is right most often where the shorter contexts' guess
        is wrong (an entry that guesses what its shorter context guesses anyway is left out)."""
        if vocab_size ** (max(orders) + 1) >= 2 ** 63:
            raise ValueError(f"a vocabulary of {vocab_size} tokens is too large for {max(orders)} tokens of context")
        tokens = np.asarray(tokens, dtype=np.int64)
        contexts, nexts = {}, {}
        for n in sorted(orders):
            keys, counts = count_ngrams(tokens, n, vocab_size, bos, eos)
            if not len(keys):
                continue
            ctx, nxt = keys // vocab_size, keys % vocab_size  # keys come sorted: by context, then next token
            # the commonest next token of each context: by context, then by count, largest first
            by_count = np.lexsort((-counts, ctx))
            first = by_count[np.flatnonzero(np.r_[True, np.diff(ctx[by_count]) != 0])]
            best_ctx, best_next, best_count = ctx[first], nxt[first], counts[first]
            if contexts:  # what the shorter contexts guess here, and how often that is right
                backoff = _guesses(contexts, nexts, best_ctx, n, vocab_size)
                backoff_key = best_ctx * vocab_size + backoff.clip(min=0)
                at = np.searchsorted(keys, backoff_key).clip(max=len(keys) - 1)
                backoff_count = np.where((backoff >= 0) & (keys[at] == backoff_key), counts[at], 0)
                gain = best_count - backoff_count  # 0 where both guess the same token
                keep = np.flatnonzero(gain > 0)
                keep = np.sort(keep[np.argsort(-gain[keep], kind="stable")[:max_entries]])
                best_ctx, best_next = best_ctx[keep], best_next[keep]
            contexts[n], nexts[n] = best_ctx, best_next
        return cls(vocab_size, contexts, nexts)

    def save(self, path: str | Path, **info) -> None:
        """One safetensors file, written atomically."""
        from safetensors.torch import save_file
        tensors = {}
        for n in self.contexts:
            tensors[f"contexts_{n}"] = torch.from_numpy(self.contexts[n])
            tensors[f"next_{n}"] = torch.from_numpy(self.nexts[n].astype(np.int16 if self.vocab_size <= 32767
                                                                          else np.int32))
        metadata = {"format": FORMAT, "vocab_size": str(self.vocab_size),
                    **{k: json.dumps(v) for k, v in info.items()}}
        with atomic_path(path, suffix=".safetensors") as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
            plain_file_mode(tmp)  # safetensors writes a new file, private to its owner

    @classmethod
    def load(cls, path: str | Path, vocab_size: int | None = None) -> "DraftTable":
        from safetensors import safe_open
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                if metadata.get("format") != FORMAT:
                    raise ModelLoadError(f"{path}: not a draft-tokens file (format {metadata.get('format')!r})")
                vocab = int(metadata["vocab_size"])
                contexts, nexts = {}, {}
                for name in f.keys():
                    kind, _, n = name.rpartition("_")
                    (contexts if kind == "contexts" else nexts)[int(n)] = f.get_tensor(name).numpy()
        except ModelLoadError:
            raise
        except Exception as e:  # a truncated or foreign file: say which, never crash the host
            raise ModelLoadError(f"{path}: cannot read draft tokens ({e})") from e
        if contexts.keys() != nexts.keys() or any(len(contexts[n]) != len(nexts[n]) for n in contexts):
            raise ModelLoadError(f"{path}: contexts and next tokens do not match")
        if vocab_size is not None and vocab != vocab_size:
            raise ModelLoadError(f"{path}: made for a vocabulary of {vocab} tokens, the model has {vocab_size}")
        if any(len(x) and (x.min() < 0 or x.max() >= vocab) for x in nexts.values()):
            raise ModelLoadError(f"{path}: a next token outside the vocabulary")
        return cls(vocab, contexts, nexts)


def _guesses(contexts: dict, nexts: dict, ctx: np.ndarray, n: int, vocab: int) -> np.ndarray:
    """What the tables of orders below n guess after each n-token context of `ctx` (-1: no guess)."""
    out = np.full(len(ctx), -1, dtype=np.int64)
    for m in sorted((m for m in contexts if m < n), reverse=True):
        todo = np.flatnonzero(out < 0)
        if not len(todo) or not len(contexts[m]):
            continue
        short = ctx[todo] % vocab ** m
        at = np.searchsorted(contexts[m], short).clip(max=len(contexts[m]) - 1)
        found = contexts[m][at] == short
        out[todo[found]] = nexts[m][at[found]]
    return out
