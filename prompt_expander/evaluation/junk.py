"""Junk in expansions: the share whose added text holds a broken fragment (see fragments.py)."""
from __future__ import annotations

from ..fileio import iter_lines
from ..fragments import MIN_COUNT, count_known_words


def known_words(corpus, min_count: int = MIN_COUNT) -> frozenset:
    """The words a prompt file writes at least `min_count` times (see count_known_words)."""
    return frozenset(count_known_words(iter_lines(corpus), min_count))
