"""The on-topic subset of a prompts file: prompts whose added words are most about their own short subject."""
from __future__ import annotations

from pathlib import Path

import torch

from ..expansion.on_topic import OnTopicPicker
from ..fileio import atomic_path, iter_lines

MAX_SUBJECT_WORDS = 3  # what people type into the expander: "a lemon", "woman portrait"
MIN_ADDED_WORDS = 8
BANK_SIZE = 512  # other subjects an addition is compared with
BATCH = 20000


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


def select_on_topic(train: Path, val: Path | None, out_dir: Path, fraction: float, tokenizer,
                    embeddings: torch.Tensor, lowercase: bool) -> tuple[Path, Path | None, float]:
    """Write the `fraction` of train's scoreable prompts that score highest (and val's prompts above the same
    threshold) to out_dir/{train,val}.on_topic.txt, in file order. Returns the two files and the threshold."""
    if not 0 < fraction <= 1:
        raise ValueError(f"the on-topic fraction must be in (0, 1], got {fraction}")
    none = ValueError(f"no prompt of {train} has a subject of 1 to {MAX_SUBJECT_WORDS} words and an addition of "
                      f"{MIN_ADDED_WORDS} or more varied words that the tokenizer knows")
    bank = _bank(iter_lines(train), BANK_SIZE)
    if not bank:
        raise none
    scorer = SubsetScorer(tokenizer, embeddings, lowercase, bank)
    train_scores = file_scores(train, scorer)
    scored = sorted(s for s in train_scores if s is not None)
    if not scored:
        raise none
    threshold = scored[min(len(scored) - 1, int(len(scored) * (1 - fraction)))]
    written = []
    for name, src, scores in (("train", train, train_scores), ("val", val, None)):
        if src is None:
            written.append(None)
            continue
        scores = scores if scores is not None else file_scores(src, scorer)
        dst = out_dir / f"{name}.on_topic.txt"
        with atomic_path(dst) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for line, score in zip(iter_lines(src), scores):
                if score is not None and score >= threshold:
                    f.write(line + "\n")
        written.append(dst)
    return written[0], written[1], threshold
