"""Broken fragments in added text: bot flags, stray numbers, lone letters, and words the corpus never writes."""
from __future__ import annotations

import re
from collections import Counter

from ..fileio import iter_lines

# "- h 860", "--ar 16:9", "- w 1 0 2 4": a Discord bot's flags, meaningless to Stable Diffusion.
_FLAG = re.compile(r"(?:^|[\s,])--?\s?[a-z]{1,2}\s+\d[\d.:]*")
# A number standing alone: not part of a word, a size (1920x1080), a ratio (16:9), a decimal or a path.
_NUMBER = re.compile(r"(?<![\w.:/x])\d+(?![\w.:/%x°])")
_UNIT_AFTER = re.compile(r"\s?(?:mm|k|p|px|fps|dpi|s)\b")
_YEAR = re.compile(r"1\d{3}|20\d{2}")
_ISO_BEFORE = re.compile(r"\b(?:iso|f|no|number|vol|volume|episode|part|chapter|version|v)\s*$", re.IGNORECASE)
# A single letter cut off a word or a name ("c 4 d", "trend i ng"); not initials ("j. c. leyendecker"),
# not what an apostrophe leaves ("o'keeffe", "don't"), not a, i, x, &.
_LONE_LETTER = re.compile(r"(?<![\w'’./])[b-hj-wyz](?![\w'’./])", re.IGNORECASE)
_AMPERSAND_PAIR = re.compile(r"\b[a-z]\s?&\s?[a-z]\b", re.IGNORECASE)  # d&d, d & d, r&b
_WORD = re.compile(r"[^\W\d_]{2,}")

MIN_COUNT = 3  # a word the training corpus writes fewer times than this is taken for a fragment


def known_words(corpus, min_count: int = MIN_COUNT) -> frozenset:
    """Every lower-cased word written at least `min_count` times in a prompt file."""
    counts = Counter()
    for line in iter_lines(corpus):
        counts.update(_WORD.findall(line.lower()))
    return frozenset(w for w, n in counts.items() if n >= min_count)


def fragments(added: str, known: frozenset | None = None, allowed=()) -> list[str]:
    """The broken pieces of an added text: flags, stray numbers of 3 or more digits (not a year, not
    followed by a unit), lone letters and, given `known`, words outside it (`allowed` words excepted:
    the user's own)."""
    found = [m.group().strip(" ,") for m in _FLAG.finditer(added)]
    rest = _FLAG.sub(" ", added)
    for m in _NUMBER.finditer(rest):
        digits = m.group()
        if len(digits) < 3 or _YEAR.fullmatch(digits) or _UNIT_AFTER.match(rest, m.end()) \
                or _ISO_BEFORE.search(rest, 0, m.start()):
            continue
        found.append(digits)
    found += _LONE_LETTER.findall(_AMPERSAND_PAIR.sub(" ", rest))
    if known is not None:
        allowed = {w.lower() for w in allowed}
        found += [w for w in _WORD.findall(rest.lower()) if w not in known and w not in allowed]
    return found
