"""Word lists (NSFW, blocklists, vocabularies) and whole-word matching over them."""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Iterable

WORDLIST_DIR = Path(__file__).resolve().parent / "wordlists"


def parse_words(text: str) -> list[str]:
    """Words or phrases from a list: one per line or comma-separated; '#' starts a comment."""
    words = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for part in line.split(","):
            part = " ".join(part.lower().split())
            if part:
                words.append(part)
    return list(dict.fromkeys(words))


def read_words(path: str | Path) -> list[str]:
    return parse_words(Path(path).read_text(encoding="utf-8", errors="replace"))


@functools.lru_cache(maxsize=None)
def nsfw_words() -> tuple[str, ...]:
    return tuple(read_words(WORDLIST_DIR / "nsfw.txt"))


class WordMatcher:
    """Finds whole-word, case-insensitive occurrences of any listed word or phrase."""

    def __init__(self, words: Iterable[str]):
        self.words = tuple(sorted({w.lower() for w in words if w.strip()}, key=len, reverse=True))
        if self.words:
            alternatives = "|".join(re.escape(w).replace(r"\ ", r"[\s_-]+") for w in self.words)
            self._re = re.compile(rf"(?<![\w])(?:{alternatives})(?![\w])", re.IGNORECASE)
        else:
            self._re = None

    def __bool__(self) -> bool:
        return self._re is not None

    def search(self, text: str) -> str | None:
        if self._re is None:
            return None
        m = self._re.search(text)
        return m.group(0).lower() if m else None

    def findall(self, text: str) -> list[str]:
        return [m.lower() for m in self._re.findall(text)] if self._re else []


@functools.lru_cache(maxsize=8)
def nsfw_matcher() -> WordMatcher:
    return WordMatcher(nsfw_words())
