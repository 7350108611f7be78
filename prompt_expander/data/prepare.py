"""`prepare`: clean, deduplicate, filter and split prompt sources into train/val text files."""
from __future__ import annotations

import argparse
import hashlib
import re
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from ..fileio import atomic_path, write_json_atomic
from .sources import expand_inputs, iter_prompts
from ..splits import HyphenCompounds, looks_split, mend_split_text
from ..wordlists import WordMatcher, nsfw_words, read_words

_WS = re.compile(r"\s+")
_URL = re.compile(r"https?://|www\.|\.com\b|discord\.gg", re.IGNORECASE)
_LETTER = re.compile(r"[^\W\d_]")
# Discord bot flags such as "-n 4", "--seed 12", "-W 512" that trail a prompt.
_TRAILING_FLAGS = re.compile(r"(?:\s+--?[a-zA-Z]{1,12}(?:\s+[\w.:]+)?)+\s*$")
_CHATTER = re.compile(
    r"^(?:is it|is this|how (?:do|can|to)|can (?:you|i|someone)|does (?:it|this|anyone)|what (?:is|are|does)"
    r"|why (?:is|does|do)|anyone|thanks|thank you|lol|lmao|haha|hi|hello|hey|ok|okay|test(?:ing)?)\b",
    re.IGNORECASE,
)
_DEDUP_STRIP = re.compile(r"[\W_]+")
# An addition this short ("digital art", "4k") is a common phrase, not a copy of a template.
TEMPLATE_MIN_WORDS = 4


def normalise(text: str) -> str:
    return _WS.sub(" ", text).strip()


def dedup_key(text: str) -> str:
    """Case- and punctuation-insensitive identity of a prompt."""
    return _DEDUP_STRIP.sub(" ", text.lower()).strip()


def addition_key(text: str) -> str | None:
    """Identity of what a prompt adds after its first comma (as dedup_key), or None when that is under
    TEMPLATE_MIN_WORDS words: prompts that share it are one template run over many subjects."""
    _, comma, added = text.partition(",")
    key = dedup_key(added) if comma else ""
    return key if len(key.split()) >= TEMPLATE_MIN_WORDS else None


def split_of(key: str, val_permille: int) -> str:
    """Stable train/val assignment from a hash of the dedup key, so reruns and new sources agree."""
    h = int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")
    return "val" if h % 1000 < val_permille else "train"


class PromptFilter:
    """Applies the cleaning rules in order and names the first rule a prompt fails."""

    def __init__(self, min_words=3, max_chars=1000, nsfw: WordMatcher | None = None, drop_nsfw=True):
        self.min_words = min_words
        self.max_chars = max_chars
        self.nsfw = nsfw if nsfw is not None else WordMatcher(nsfw_words())
        self.drop_nsfw = drop_nsfw

    def clean(self, raw: str) -> tuple[str | None, str]:
        """Return (cleaned prompt, "kept") or (None, rule that dropped it)."""
        text = normalise(raw)
        if text.startswith(("!", "/", "$", ".")) and not text.startswith("..."):
            return None, "bot_command"
        text = _TRAILING_FLAGS.sub("", text).strip()
        if not _LETTER.search(text):
            return None, "no_letters"
        if _URL.search(text):
            return None, "url"
        if len(text.split()) < self.min_words:
            return None, "too_short"
        if len(text) > self.max_chars:
            return None, "too_long"
        if _CHATTER.match(text) and (text.endswith("?") or len(text.split()) < 8):
            return None, "chatter"
        if text.endswith("?") and len(text.split()) < 12:
            return None, "chatter"
        if self.drop_nsfw and self.nsfw.search(text):
            return None, "nsfw"
        return text, "kept"


def _percentiles(values, ps=(5, 25, 50, 75, 95, 99)):
    if not values:
        return {}
    values = sorted(values)
    return {f"p{p}": values[min(len(values) - 1, int(len(values) * p / 100))] for p in ps}


def prepare(inputs, out_dir, column=None, val_permille=5, min_words=3, max_chars=1000,
            nsfw_list=None, keep_nsfw=False, progress=True, max_same_addition=0) -> dict:
    """max_same_addition N > 0 keeps only the first N prompts that add the same text after their first comma
    (see addition_key): a template's addition is the same whatever the subject, so its copies teach a model
    to add generic text."""
    out_dir = Path(out_dir)
    files = expand_inputs(inputs)
    if not files:
        raise SystemExit("prepare: no input files")
    words = read_words(nsfw_list) if nsfw_list else nsfw_words()
    filt = PromptFilter(min_words, max_chars, WordMatcher(words), drop_nsfw=not keep_nsfw)
    counts = Counter()
    # Prompts detokenised with their digits and hyphens split off ('8 k', 'close - up') are mended to the way
    # people write, learning which hyphenated words exist from the prompts that write them joined.
    compounds = HyphenCompounds()
    for f in tqdm(files, desc="prepare: hyphenated words", disable=not progress):
        for raw in iter_prompts(f, column):
            compounds.add(raw)
    seen: set[bytes] = set()
    additions: Counter = Counter()
    lengths_chars, lengths_words = [], []
    with atomic_path(out_dir / "train.txt") as train_tmp, atomic_path(out_dir / "val.txt") as val_tmp:
        with open(train_tmp, "w", encoding="utf-8") as ftrain, open(val_tmp, "w", encoding="utf-8") as fval:
            bar = tqdm(desc="prepare", unit=" prompts", disable=not progress, mininterval=1.0)
            for path in files:
                for raw in iter_prompts(path, column):
                    counts["read"] += 1
                    bar.update(1)
                    text, rule = filt.clean(raw)
                    if text is None:
                        counts[rule] += 1
                        continue
                    split_key = dedup_key(text)  # as read: mending does not move a prompt between splits
                    if looks_split(text):
                        mended = mend_split_text(text, compounds)
                        counts["mended"] += mended != text
                        text = mended
                    key = dedup_key(text)
                    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=10).digest()
                    if digest in seen:
                        counts["duplicate"] += 1
                        continue
                    seen.add(digest)
                    added = addition_key(text) if max_same_addition > 0 else None
                    if added is not None:
                        added_digest = hashlib.blake2b(added.encode("utf-8"), digest_size=10).digest()
                        additions[added_digest] += 1
                        if additions[added_digest] > max_same_addition:
                            counts["template"] += 1
                            continue
                    split = split_of(split_key, val_permille)
                    (fval if split == "val" else ftrain).write(text + "\n")
                    counts[split] += 1
                    lengths_chars.append(len(text))
                    lengths_words.append(len(text.split()))
            bar.close()
    stats = {
        "inputs": [str(f) for f in files],
        "read": counts["read"],
        "kept": counts["train"] + counts["val"],
        "train": counts["train"],
        "val": counts["val"],
        "dropped": {k: counts[k] for k in ("bot_command", "no_letters", "url", "too_short", "too_long",
                                           "chatter", "nsfw", "duplicate", "template")},
        "max_same_addition": max_same_addition,
        "mended": counts["mended"],
        "hyphen_compounds_known": len(compounds),
        "val_permille": val_permille,
        "min_words": min_words,
        "max_chars": max_chars,
        "nsfw_words": len(words),
        "length_chars": _percentiles(lengths_chars),
        "length_words": _percentiles(lengths_words),
    }
    write_json_atomic(out_dir / "stats.json", stats)
    return stats


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number, 0 (off) or more, got {text!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="prompt files or folders (.txt[.gz], .csv, .tsv, .jsonl, .parquet)")
    p.add_argument("--out", required=True, help="output folder for train.txt, val.txt and stats.json")
    p.add_argument("--column", help="column or key holding the prompt in CSV/TSV/JSONL/Parquet (default: prompt)")
    p.add_argument("--val-permille", type=int, default=5, help="validation share in 1/1000 (default 5)")
    p.add_argument("--min-words", type=int, default=3, help="drop prompts with fewer words (default 3)")
    p.add_argument("--max-chars", type=int, default=1000, help="drop prompts longer than this (default 1000)")
    p.add_argument("--nsfw-list", help="word list file replacing the bundled wordlists/nsfw.txt")
    p.add_argument("--keep-nsfw", action="store_true", help="do not drop prompts that hit the NSFW list")
    p.add_argument("--max-same-addition", type=_count, default=0, metavar="N",
                   help=f"keep only the first N prompts that add the same text (of {TEMPLATE_MIN_WORDS}+ words) "
                        "after their first comma, i.e. templates run over many subjects (default 0: all)")


def main(args) -> int:
    stats = prepare(args.inputs, args.out, args.column, args.val_permille, args.min_words,
                    args.max_chars, args.nsfw_list, args.keep_nsfw, max_same_addition=args.max_same_addition)
    print(f"read {stats['read']}, kept {stats['kept']} (train {stats['train']}, val {stats['val']})")
    for rule, n in stats["dropped"].items():
        print(f"  dropped {rule:12s} {n}")
    print(f"  length (chars) {stats['length_chars']}")
    print(f"stats written to {Path(args.out) / 'stats.json'}")
    return 0
