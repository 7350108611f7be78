"""Per-tokenizer facts the decoder needs: token bytes, word starts, forbidden tokens, banned sequences."""
from __future__ import annotations

import functools
from typing import Iterable

import torch

from .syntax import SYNTAX_CHARS


_FUNCTION_WORDS = frozenset("and the with from for into onto over under by of in on at to as".split())


@functools.lru_cache(maxsize=1)
def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE writes each byte as a printable character; this maps them back."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    extra = 0
    mapping = {}
    for b in range(256):
        if b in printable:
            mapping[chr(b)] = b
        else:
            mapping[chr(256 + extra)] = b
            extra += 1
    return mapping


class VocabInfo:
    """Static per-token tables, built once per loaded tokenizer."""

    def __init__(self, tokenizer, vocab_size: int):
        self.vocab_size = vocab_size
        self.eos_id = tokenizer.eos_token_id
        self.token_bytes = self._token_bytes(tokenizer, vocab_size)
        texts = [b.decode("utf-8", "replace") for b in self.token_bytes]
        self.starts_word = [not t or not (t[0].isalnum() or t[0] in "'’") for t in texts]
        self.has_comma = [("," in t) for t in texts]
        # Tokens that are content words on their own: a pair of them never repeats in one expansion.
        self.content_word = [t.strip().isalpha() and len(t.strip()) >= 3 and t.strip().lower() not in _FUNCTION_WORDS
                             for t in texts]
        # Word-start tokens that spell the start of a longer word-start token: " eng" and " en" of " engine".
        ids = {t: i for i, t in enumerate(texts) if self.starts_word[i]}
        self.word_prefixes = {i: tuple(ids[t[:k]] for k in range(2, len(t)) if t[:k] in ids)
                              for i, t in enumerate(texts) if self.content_word[i]}
        forbidden = torch.zeros(vocab_size, dtype=torch.bool)
        specials = {i for i in (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id) if i is not None}
        specials |= set(getattr(tokenizer, "all_special_ids", []) or [])
        specials.discard(self.eos_id)
        for i, t in enumerate(texts):
            if (i in specials or any(c in SYNTAX_CHARS for c in t) or any(c in "\n\r\t" for c in t)
                    or t.strip() in ("BREAK", "AND")):
                forbidden[i] = True
        forbidden[len(texts):] = True  # padding rows of an enlarged embedding matrix
        self.forbidden = forbidden

    @staticmethod
    def _token_bytes(tokenizer, vocab_size: int) -> list[bytes]:
        decoder = _byte_level_decoder()
        tokens = tokenizer.convert_ids_to_tokens(list(range(min(vocab_size, len(tokenizer)))))
        byte_level = all(t is None or all(c in decoder for c in t) for t in tokens[:1000])
        out = []
        for i, t in enumerate(tokens):
            if t is None:
                out.append(b"")
            elif byte_level:
                out.append(bytes(decoder[c] for c in t if c in decoder))
            else:
                out.append(tokenizer.decode([i]).encode("utf-8"))
        out.extend(b"" for _ in range(vocab_size - len(out)))
        return out

    def respells(self, token: int, banned: set[int]) -> bool:
        """Whether `token` begins a banned word another way (" eng" when " engine" is banned)."""
        return token not in banned and any(token in self.word_prefixes.get(i, ()) for i in banned)

    def decode(self, ids: Iterable[int]) -> str:
        return b"".join(self.token_bytes[i] for i in ids).decode("utf-8", "ignore")


class BanTable:
    """Token sequences keyed by prefix: a ban list (each bans its last token after its prefix), or,
    with every_prefix, a phrase list whose next token is boosted as the phrase is being written."""

    def __init__(self):
        self.by_prefix: dict[tuple, set[int]] = {}
        self.max_prefix = 0

    def add(self, ids, every_prefix: bool = False) -> None:
        """Register a sequence; with every_prefix each of its tokens is listed after the tokens before it."""
        ids = tuple(ids)
        for end in range(1 if every_prefix else len(ids), len(ids) + 1):
            self.by_prefix.setdefault(ids[: end - 1], set()).add(ids[end - 1])
        self.max_prefix = max(self.max_prefix, len(ids) - 1)

    def add_words(self, tokenizer, words, cased: bool, every_prefix: bool = False,
                  bare: bool = True) -> "BanTable":
        for w in words:
            forms = {w, w.lower()}
            if cased:
                forms |= {w.capitalize(), w.title(), w.upper()}
            for form in forms:
                for variant in ((" " + form, form) if bare else (" " + form,)):
                    ids = tokenizer.encode(variant, add_special_tokens=False, verbose=False)
                    if ids:
                        self.add(ids, every_prefix)
        return self

    def merge(self, other: "BanTable") -> "BanTable":
        out = BanTable()
        for table in (self, other):
            for prefix, last in table.by_prefix.items():
                out.by_prefix.setdefault(prefix, set()).update(last)
            out.max_prefix = max(out.max_prefix, table.max_prefix)
        return out

    def single_tokens(self) -> set[int]:
        return self.by_prefix.get((), set())

    def banned_after(self, history: list[int]) -> set[int]:
        out: set[int] = set()
        for k in range(1, min(self.max_prefix, len(history)) + 1):
            hit = self.by_prefix.get(tuple(history[-k:]))
            if hit:
                out |= hit
        return out
