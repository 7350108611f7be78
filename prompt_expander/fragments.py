"""Broken fragments in generated text: bot flags, stray numbers, split-off letters, words a corpus never writes."""
from __future__ import annotations

import bisect
import gzip
import re
from collections import Counter
from pathlib import Path
from typing import Iterable

from .fileio import atomic_path, iter_lines

# "- h 860", "--ar 16:9", "- w 1 0 2 4": a Discord bot's flags, meaningless to Stable Diffusion.
_FLAG = re.compile(r"(?:^|[\s,])--?\s?[a-z]{1,2}\s+\d[\d.:]*")
# A number standing alone: not part of a word, a size (1920x1080), a ratio (16:9), a decimal or a path.
_NUMBER = re.compile(r"(?<![\w.:/x])\d+(?![\w.:/%x°])")
_UNIT_AFTER = re.compile(r"\s?(?:mm|k|p|px|fps|dpi|s)\b")
_YEAR = re.compile(r"1\d{3}|20\d{2}")
_NUMBERED_BEFORE = re.compile(r"\b(?:iso|f|no|number|vol|volume|episode|part|chapter|version|v)\s*$", re.IGNORECASE)
# A letter split off a word or a name: next to a number or a spaced hyphen ("c 4 d", "a 7 r iv", "v - ray").
# Initials ("h r giger", "j. c. leyendecker") and "d & d" are not fragments.
_SPLIT_LETTER = re.compile(r"(?:(?<=\d )|(?<=- ))[b-hj-wyz](?![\w'’./])|(?<![\w'’./])[b-hj-wyz](?= (?:\d|-(?: |$)))",
                           re.IGNORECASE)
# Numbers no camera, screen or calendar writes: a chain of three or more ("c9.9.3.5", "n.8x77.10724"), a unit
# glued to a letter and a long number ("w6830mm") or to five digits or more ("20216k"), a decade that is no
# decade ("130s", "20210s"; "80s" and "1920s" are), a letter wedged in a number ("4-h74"), a decimal with
# four or more digits on a side ("artstation.-102458.0082", "3840.2160"; "f/1.4" and "0.5" are fine).
_MANGLED = re.compile(r"\d+(?:[.x]\d+){2,}"
                      r"|\d{4,}\.\d+|\d+\.\d{4,}"
                      r"|(?:(?<=[a-z])\d{4,}|\d{5,})(?:k|mm)\b"
                      # a shutter speed ("1 / 160s") is no decade
                      r"|(?<![\w/.])(?<!/ )(?!\d{2}'?s\b|100'?s\b|(?:1\d{3}|20\d{2})'?s\b)\d+0'?s\b"
                      r"|(?<![a-z\d])\d+-[a-z]\d", re.IGNORECASE)
# A word glued to a function word by an apostrophe ("by’finder", "of'light"): no name or contraction starts so
# ("o'keeffe", "d'arc", "don't" do not).
_GLUED = re.compile(r"(?<![\w'’])(?:by|of|in|on|and|the|with|at|to|for|from)['’][^\W\d_]{2,}", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]{2,}")
_COMPOUND = re.compile(r"\b[^\W\d_]+-[^\W\d_]+\b")  # "close-up", "william-adolphe"

KNOWN_WORDS_FILE = "known_words.txt.gz"
MIN_COUNT = 3  # a word the training corpus writes fewer times than this is taken for a fragment
TRUNCATION_RATIO = 10  # a cut word's whole form is written at least this many times as often as the cut one


def count_known_words(lines: Iterable[str], min_count: int = MIN_COUNT) -> list[str]:
    """Every lower-cased word of two or more letters, and every hyphenated compound ("close-up"), written at
    least `min_count` times, sorted. The compounds let the tidy-up join a split 'close - up' back.

    Words cut off by a prompt's length limit are left out: a word written `min_count` times only because
    prompts ended on it, which begins a word written TRUNCATION_RATIO times as often ("artstat", "beautif",
    "backgro"). A rare word that prompts merely end on ("carolingian") stays."""
    counts, at_end = Counter(), Counter()
    for line in lines:
        line = line.lower().rstrip()
        words = _WORD.findall(line)
        counts.update(words)
        counts.update(_COMPOUND.findall(line))
        if words and line.endswith(words[-1]):
            at_end[words[-1]] += 1
    known = sorted(w for w, n in counts.items() if n >= min_count)
    return [w for w in known if counts[w] - at_end[w] >= min_count or not _cut_from_longer(w, known, counts)]


def _cut_from_longer(word: str, known: list[str], counts: Counter) -> bool:
    """Whether a known word that begins with `word` is written TRUNCATION_RATIO times as often. Its plural does
    not count: `bystander` is a word of its own even where `bystanders` is far commoner."""
    i = bisect.bisect_right(known, word)
    while i < len(known) and known[i].startswith(word):
        if counts[known[i]] >= TRUNCATION_RATIO * counts[word] and known[i] not in (word + "s", word + "es"):
            return True
        i += 1
    return False


def corpus_words(corpus: str | Path, min_count: int = MIN_COUNT) -> list[str]:
    """count_known_words over a prompt file (.txt or .txt.gz)."""
    return count_known_words(iter_lines(corpus), min_count)


def words_in(text: str) -> list[str]:
    """The lower-cased words of two or more letters that a word list is checked against."""
    return _WORD.findall(text.lower())


def write_known_words(path: str | Path, words: Iterable[str]) -> None:
    """One word per line, gzipped with no timestamp: the same words give the same bytes."""
    with atomic_path(path) as tmp, open(tmp, "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write("".join(w + "\n" for w in words).encode("utf-8"))


def read_known_words(path: str | Path) -> frozenset:
    """The list write_known_words wrote (or a plain one-word-per-line file), read whole: 3x faster than by line."""
    path = Path(path)
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return frozenset(data.decode("utf-8", "replace").lower().split())


def fragments(text: str, known: frozenset | None = None, allowed: Iterable[str] = ()) -> list[str]:
    """The broken pieces of a text: bot flags, mangled numbers (see _MANGLED), stray numbers of 3 or more digits
    (not a year, not followed by a unit), letters split off a word, words glued to a function word by an
    apostrophe and, given `known`, words outside it (`allowed` ones excepted: the user's own)."""
    found = [m.group().strip(" ,") for m in _FLAG.finditer(text)]
    rest = _FLAG.sub(" ", text)
    found += _MANGLED.findall(rest)
    rest = _MANGLED.sub(" ", rest)
    for m in _NUMBER.finditer(rest):
        digits = m.group()
        if len(digits) < 3 or _YEAR.fullmatch(digits) or _UNIT_AFTER.match(rest, m.end()) \
                or _NUMBERED_BEFORE.search(rest, 0, m.start()):
            continue
        found.append(digits)
    found += _SPLIT_LETTER.findall(rest)
    found += _GLUED.findall(rest)
    if known is not None:
        allowed = {w.lower() for w in allowed}
        found += [w for w in words_in(rest) if w not in known and w not in allowed]
    return found
