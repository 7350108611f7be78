"""The on-topic subset of a prompts file: prompts whose added words are most about their own short subject."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from ..expansion.on_topic import OnTopicPicker
from ..fileio import iter_lines, write_lines_atomic

MAX_SUBJECT_WORDS = 3  # what people type into the expander: "a lemon", "woman portrait"
MIN_ADDED_WORDS = 8
BANK_SIZE = 512  # other subjects an addition is compared with
BATCH = 20000
# A first phrase that prompts write this many times more often after their first comma is a style or a framing
# ("concept art" 1,161 times first and 137,099 later, "portrait" 2,484 and 18,693), not a subject, so its
# prompts have no subject to be about; a subject such as "woman" (455 and 564) or "mountains" (271, 934) stays.
MODIFIER_RATIO = 4
# Keep only a subject's best-scoring prompts: a few templates repeated hundreds of times ("kodak portra 400",
# "ultra realistic illustration") would otherwise fill the subset with their own additions.
PER_SUBJECT = 8


def subject_and_addition(line: str) -> tuple[str, str] | None:
    """A prompt's subject (its first comma phrase, of 1 to MAX_SUBJECT_WORDS words) and the words it adds after
    it (at least MIN_ADDED_WORDS); None for a prompt of another shape."""
    subject, comma, added = line.partition(",")
    subject, added = subject.strip(), added.strip()
    words = added.lower().split()
    if not comma or not 1 <= len(subject.split()) <= MAX_SUBJECT_WORDS or len(words) < MIN_ADDED_WORDS \
            or len(set(words)) < len(words) / 2:  # "gorillaz, gorillaz, gorillaz, ..." is no detail
        return None
    return subject, added


def without_subject_words(subject: str, added: str) -> str:
    """The addition less the subject's own words: the expander never repeats the user's words, so an addition
    that scores by repeating its subject teaches nothing it may write."""
    own = {w.strip(".,;:!?()\"'").lower() for w in subject.split()}
    return " ".join(w for w in added.split() if w.strip(".,;:!?()\"'").lower() not in own)


class SubsetScorer:
    """How much a prompt's addition (less the subject's own words) is about its own subject rather than any
    subject: cos(addition, subject) minus the mean cos(addition, other subjects), with the on-topic pick's
    vectors (OnTopicPicker: the base's own token embeddings, no forward pass). It mirrors the specificity that
    expand-eval measures, without the judge's embedder, which neither training nor expansion may use."""

    def __init__(self, tokenizer, embeddings: torch.Tensor, lowercase: bool, bank: list[str]):
        self.picker = OnTopicPicker(tokenizer, embeddings)
        self.lowercase = lowercase
        vectors, ok = self.picker.vectors([self._case(s) for s in bank])
        if not bool(ok.any()):
            raise ValueError("none of the subjects has a token the tokenizer knows")
        self.bank_mean = vectors[ok].mean(0)

    def _case(self, text: str) -> str:
        return text.lower() if self.lowercase else text

    def scores(self, pairs: list[tuple[str, str]]) -> torch.Tensor:
        """One score per (subject, addition); -inf where either has no tokens."""
        subjects, ok_s = self.picker.vectors([self._case(s) for s, _ in pairs])
        added, ok_a = self.picker.vectors([self._case(without_subject_words(s, a)) for s, a in pairs])
        scores = (added * subjects).sum(-1) - added @ self.bank_mean
        return scores.masked_fill(~(ok_s & ok_a), -float("inf"))


def _bank(lines, size: int) -> list[str]:
    """The first `size` distinct subjects of a file: the same file gives the same bank."""
    seen: dict[str, None] = {}
    for line in lines:
        pair = subject_and_addition(line)
        if pair and pair[0].lower() not in seen:
            seen[pair[0].lower()] = None
            if len(seen) >= size:
                break
    return list(seen)


def file_scores(path, scorer: SubsetScorer) -> list[float | None]:
    """The score of every non-blank line of a file, None for a line of another shape."""
    out: list[float | None] = []
    batch: list[tuple[int, tuple[str, str]]] = []

    def flush():
        if batch:
            values = scorer.scores([pair for _, pair in batch]).tolist()
            for (i, _), v in zip(batch, values):
                out[i] = v if v != -float("inf") else None
            batch.clear()
    for line in iter_lines(path):
        out.append(None)
        pair = subject_and_addition(line)
        if pair is not None:
            batch.append((len(out) - 1, pair))
            if len(batch) >= BATCH:
                flush()
    flush()
    return out


def _phrase_key(phrase: str) -> str:
    """A comma phrase as modifier_subjects counts it; the same as self_distill.subject_of's, lower-cased."""
    return " ".join(phrase.split()).lower()


def _subject_key(line: str) -> str:
    return _phrase_key(line.split(",", 1)[0])


def modifier_subjects(path) -> set[str]:
    """The 1-to-MAX_SUBJECT_WORDS-word first phrases (lower-cased) that the file's prompts write more than
    MODIFIER_RATIO times as often as a later comma phrase than as their first one."""
    first: Counter = Counter()
    for line in iter_lines(path):
        key = _subject_key(line)
        if 1 <= len(key.split()) <= MAX_SUBJECT_WORDS:
            first[key] += 1
    later: Counter = Counter()
    for line in iter_lines(path):
        for phrase in line.split(",")[1:]:
            phrase = _phrase_key(phrase)
            if phrase in first:
                later[phrase] += 1
    return {key for key, n in first.items() if later[key] > MODIFIER_RATIO * n}


def select_on_topic(train: Path, val: Path | None, out_dir: Path, fraction: float, tokenizer,
                    embeddings: torch.Tensor, lowercase: bool) -> tuple[Path, Path | None, float]:
    """Write the `fraction` of train's scoreable prompts that score highest (and val's prompts above the same
    threshold) to out_dir/{train,val}.on_topic.txt, in file order. Returns the two files and the threshold.

    A prompt whose first phrase is a style rather than a subject (see modifier_subjects) is not scoreable, and
    each subject keeps at most its PER_SUBJECT best prompts before the share is taken."""
    if not 0 < fraction <= 1:
        raise ValueError(f"the on-topic fraction must be in (0, 1], got {fraction}")
    none = ValueError(f"no prompt of {train} has a subject of 1 to {MAX_SUBJECT_WORDS} words and an addition of "
                      f"{MIN_ADDED_WORDS} or more varied words that the tokenizer knows")
    bank = _bank(iter_lines(train), BANK_SIZE)
    if not bank:
        raise none
    scorer = SubsetScorer(tokenizer, embeddings, lowercase, bank)
    modifiers = modifier_subjects(train)
    by_subject: dict[str, list[tuple[float, int]]] = {}
    for i, (line, score) in enumerate(zip(iter_lines(train), file_scores(train, scorer))):
        key = _subject_key(line)
        if score is not None and key not in modifiers:
            by_subject.setdefault(key, []).append((score, i))
    best = [item for items in by_subject.values() for item in sorted(items, reverse=True)[:PER_SUBJECT]]
    if not best:
        raise none
    scored = sorted(score for score, _ in best)
    threshold = scored[min(len(scored) - 1, int(len(scored) * (1 - fraction)))]
    kept_train = {i for score, i in best if score >= threshold}
    train_out, val_out = out_dir / "train.on_topic.txt", None
    write_lines_atomic(train_out, (line for i, line in enumerate(iter_lines(train)) if i in kept_train))
    if val is not None:  # val's prompts by train's threshold and styles; a subject's few val prompts need no cap
        val_out = out_dir / "val.on_topic.txt"
        write_lines_atomic(val_out, (line for line, score in zip(iter_lines(val), file_scores(val, scorer))
                                     if score is not None and score >= threshold
                                     and _subject_key(line) not in modifiers))
    return train_out, val_out, threshold
