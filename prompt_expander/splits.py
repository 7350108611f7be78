"""Mending text whose tokens were split apart by a detokeniser ('8 k', 'award - winning', '1 9 2 0 s')."""
from __future__ import annotations

import re
from collections import Counter

_SPLIT_DIGITS = re.compile(r"(?<=\d) (?=\d)")
_SPLIT_UNIT = re.compile(r"(?<=\d) (?=(?:k|d|s|mm|px|p|fps|th|st|nd|rd)\b)")
# "f 1. 4" is a split decimal; "engine 5. 24mm film" a phrase that ended on a number.
_SPLIT_DECIMAL = re.compile(r"(?<=\d)\. (?=\d+(?!\w))")
# Only the first halves of compounds: a " - " after any other word may be a separator ("a cat - digital art").
_SPLIT_HYPHEN = re.compile(
    r"\b(sci|award|close|hyper|highly|full|ultra|well|post|dream|neo|real|top|photo|low|high|semi|super|mid|half"
    r"|self|hand|life|wide|multi|anti|non|pre|cel|spider|t|x) - (?=[a-z])", re.IGNORECASE)
# Only names that are written as one token: a lone "a 4k photo" must keep its space.
_SPLIT_NAME = re.compile(r"\b(c|ue) (?=\d)", re.IGNORECASE)

_SPACED_HYPHEN = re.compile(r"\b([^\W\d_]+) - ([^\W\d_]+)\b")
_JOINED_HYPHEN = re.compile(r"\b([^\W\d_]+)-([^\W\d_]+)\b")
# Discord bot flags after detokenising: "- w 1 0 2 4 - n 8 - i" (a run with at least one number in it).
_SPLIT_FLAGS = re.compile(r"(?:\s+--?\s?[a-z]\b(?:\s+[\d.:]+)?)*\s+--?\s?[a-z]\s+\d[\d.:]*(?:\s+--?\s?[a-z]\b(?:\s+[\d.:]+)?)*\s*$")


def tidy_splits(text: str) -> str:
    """Undo a corpus artefact: one source split digits and hyphens off, so '8 k', '8 0 s', 'f 1. 4', 'c 4 d',
    'ue 5', 'award - winning' read as '8k', '80s', 'f 1.4', 'c4d', 'ue5', 'award-winning'."""
    text = _SPLIT_HYPHEN.sub(r"\1-", text)
    text = _SPLIT_DIGITS.sub("", text)
    text = _SPLIT_UNIT.sub("", text)
    text = _SPLIT_DECIMAL.sub(".", text)  # after the units: "5. 2 4 mm" is "5. 24mm", no decimal
    return _SPLIT_NAME.sub(r"\1", text)


_SPLIT_SIGNS = re.compile(r"\b\d (?:\d|k\b)|\b[^\W\d_]+ - [^\W\d_]+\b")


def looks_split(line: str) -> bool:
    """Whether a prompt went through the detokeniser that split '8k' and 'close-up' apart: it has a split
    number or a spaced hyphen, and no hyphenated word written joined. Part of one source's channels did,
    so this is decided line by line."""
    return bool(_SPLIT_SIGNS.search(line)) and not _JOINED_HYPHEN.search(line)


class HyphenCompounds:
    """Hyphenated words ('close-up', 'kim jong-un') as written in ordinary sources, for mending split ones."""

    def __init__(self, min_count: int = 3):
        self.counts: Counter = Counter()
        self.min_count = min_count

    def add(self, text: str) -> None:
        self.counts.update(m.group(0).lower() for m in _JOINED_HYPHEN.finditer(text))

    def __contains__(self, compound: str) -> bool:
        """Whether 'a-b' (lower-cased) is written often enough to count as a word."""
        return self.counts[compound] >= self.min_count

    def __len__(self) -> int:
        return sum(1 for c in self.counts.values() if c >= self.min_count)


def join_compounds(text: str, compounds) -> str:
    """'a - b' written 'a-b' where the lower-cased 'a-b' is in `compounds` (what the corpus writes joined)."""
    return _SPACED_HYPHEN.sub(lambda m: f"{m.group(1)}-{m.group(2)}"
                              if f"{m.group(1)}-{m.group(2)}".lower() in compounds else m.group(0), text)


def mend_split_text(text: str, compounds: HyphenCompounds | None = None) -> str:
    """A prompt from a split source as its author typed it: numbers and known compounds joined, the bot flags
    that trailed it dropped. An unknown 'a - b' stays, as it may be a separator."""
    text = _SPLIT_FLAGS.sub("", tidy_splits(text))
    if compounds is not None:
        text = join_compounds(text, compounds)
    return text
