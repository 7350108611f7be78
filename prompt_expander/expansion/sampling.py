"""Per-row seeded sampling with bans, bias, temperature, top-k and top-p, and the clean-ending rules."""
from __future__ import annotations

import math
import operator
from typing import Callable

import torch

from .budget import approx_clip_tokens, count_adds_up_at
from .syntax import DANGLING
from .vocab import BanTable, VocabInfo

SEED_SPACE = 2**64


def normalise_seed(seed) -> int:
    """Any integer (negative, huge) maps onto [0, 2**64): seeds are normalised, never rejected."""
    if isinstance(seed, bool):
        seed = int(seed)
    if isinstance(seed, float):
        if not math.isfinite(seed) or seed != int(seed):
            from ..errors import InputError
            raise InputError(f"seed must be a whole number, got {seed!r}")
        seed = int(seed)
    if isinstance(seed, str):
        try:
            seed = int(seed.strip())
        except ValueError:
            from ..errors import InputError
            raise InputError(f"seed must be a whole number, got {seed!r}") from None
    try:
        seed = operator.index(seed)  # int, numpy integers and the like
    except TypeError:
        from ..errors import InputError
        raise InputError(f"seed must be a whole number, got {seed!r}") from None
    return seed % SEED_SPACE


def warp_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Temperature, then top-k, then top-p, in the order and with the tie rules of transformers' warpers."""
    logits = logits / temperature
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=False, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= (1 - top_p)
        remove_sorted[..., -1:] = False  # always keep the most likely token
        remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
        logits = logits.masked_fill(remove, -math.inf)
    return logits


CONTRAST_PLAUSIBILITY = 0.1  # contrastive scores only rank tokens at least this likely relative to the top


def contrastive_scores(logits: torch.Tensor, unconditional: torch.Tensor, weight: float) -> torch.Tensor:
    """log p(x | input) - weight * log p(x | no input), over the tokens the input makes plausible.

    Tokens the model would write whatever the subject (generic filler) lose; tokens the subject makes more
    likely gain. Ranking only tokens within CONTRAST_PLAUSIBILITY of the top one (Li et al. 2023's adaptive
    plausibility) keeps the contrast from promoting tokens that are merely rare without the input."""
    conditional = logits.log_softmax(dim=-1)
    top = conditional.max(dim=-1, keepdim=True).values
    if bool(top.isnan().any()):  # a row with every token banned is all NaN (max passes NaN on): -inf instead
        conditional = conditional.masked_fill(conditional.isnan(), -math.inf)
        top = conditional.max(dim=-1, keepdim=True).values
    scores = conditional - weight * unconditional.log_softmax(dim=-1)
    return scores.masked_fill_(conditional < top + math.log(CONTRAST_PLAUSIBILITY), -math.inf)


def gumbel_rows(generators, n: int) -> torch.Tensor:
    """Gumbel noise [len(generators), n], row r drawn from generators[r] (None: a finished row, no draw).

    argmax(logits + a row of this) is an exact draw from softmax(logits). Each row owns its generator, so
    its draws never depend on what else is in the batch; rows are padded to a multiple of 16 so that every
    value goes through the same vectorised log whatever the batch size: a row's noise is bit-identical
    alone or in a batch."""
    width = -(-n // 16) * 16
    u = torch.full((len(generators), width), 0.5)
    for r, g in enumerate(generators):
        if g is not None:
            torch.rand(n, generator=g, dtype=torch.float32, out=u[r, :n])
    return u.clamp_(min=1e-20, max=1 - 1e-7).log_().neg_().log_().neg_()[:, :n]  # -log(-log(u)), in place


class RowDecoder:
    """Chooses the next token of every row and tracks where each row may cleanly stop."""

    def __init__(self, vocab: VocabInfo, bans: BanTable, seeds, *, temperature: float, top_k: int, top_p: float,
                 budget: int, count: Callable[[str], int], separator: str, min_new_tokens: int,
                 max_new_tokens: int, boost: BanTable | None = None, boost_value: float = 0.0,
                 contrast: float = 0.0, contrast_words: int = 0, pause_at_words: int = 0):
        self.vocab, self.bans = vocab, bans
        self.greedy = temperature <= 0
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.budget, self.count, self.separator = budget, count, separator
        self.min_new_tokens, self.max_new_tokens = min_new_tokens, max_new_tokens
        self.n = len(seeds)
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.tokens: list[list[int]] = [[] for _ in seeds]
        self.row_bytes = [bytearray() for _ in seeds]  # the bytes of self.tokens[r]
        self.counted = [(0, 0)] * self.n  # (bytes counted, their count) of row_bytes[r], see _row_count
        self.segment: list[list[int]] = [[] for _ in seeds]
        self.segment_bans = [BanTable() for _ in seeds]
        self.trigrams: list[dict] = [{} for _ in seeds]  # (t1, t2) -> tokens that followed them
        self.word_pairs: list[dict] = [{} for _ in seeds]  # content-word token -> content words after it
        self.clean_len = [0] * self.n  # tokens up to the last word boundary that fits the budget
        self.done = [False] * self.n
        self.ended_by_eos = [False] * self.n
        # A row with this many words stops before the next one begins, to be picked and continued (see replay);
        # 0 = never. paused[r] tells such a stop from a row that is finished.
        self.pause_at_words = pause_at_words
        self.words = [0] * self.n
        self.paused = [False] * self.n
        self.paused_rows = None  # set by a fast decode: where paused rows can go on from (decoding.PausedRows)
        # Per row, the modifiers (by their number of commas before) in which the row began a word the repeat
        # bans had just banned, spelled another way: the model seldom finishes such a spelling, and the text
        # showed a word cut in two ("unreal engine, ..., unreal eng"). row_text leaves those modifiers out.
        self.respelled: list[set[int]] = [set() for _ in seeds]
        static = vocab.forbidden.clone()
        static[list(bans.single_tokens())] = True
        self.static_mask = static
        self._static, self._mask_device = None, None
        self.boost, self.boost_value = boost, boost_value
        self.contrast = contrast
        # Contrast chooses a row's tokens until it has written this many words, and its conditional logits
        # alone the rest; 0 = to the end. Its gain in specificity is the first words' (docs/specificity.md).
        self.contrast_words = contrast_words
        self.steps = 0

    @property
    def all_done(self) -> bool:
        return all(self.done)

    @property
    def wants_unconditional(self) -> bool:
        """Whether a later choice may still read the logits without the input: a decode stops computing them
        once every row is finished or past contrast_words."""
        if self.contrast <= 0:
            return False
        if not self.contrast_words:
            return True
        return any(not done and words < self.contrast_words for done, words in zip(self.done, self.words))

    def choose(self, logits: torch.Tensor, unconditional: torch.Tensor | None = None) -> torch.Tensor:
        """Next token per row, from logits of shape [rows, vocab]; finished rows get EOS.

        With `contrast` > 0, `unconditional` holds the same rows' logits without the user's text (see
        contrastive_scores)."""
        logits = logits.float()
        vocab_n = logits.size(-1)
        if self._mask_device != logits.device:
            # The columns, not a vocabulary-wide mask: a few dozen writes instead of a pass over every logit.
            self._static = self.static_mask[:vocab_n].nonzero().view(-1).to(logits.device)
            self._mask_device = logits.device
        logits = logits.index_fill(1, self._static, -math.inf)
        eos = self.vocab.eos_id
        if self.steps < self.min_new_tokens and eos is not None:
            logits[:, eos] = -math.inf
        ban_rows, ban_cols = [], []
        repeats_banned = {}
        for r in range(self.n):
            if self.done[r]:
                continue
            tokens = self.tokens[r]
            # Modifier repeats are matched from the segment start, word bans anywhere.
            extra = self.bans.banned_after(tokens) if self.bans.max_prefix else set()
            seg_ban = self.segment_bans[r].by_prefix.get(tuple(self.segment[r]))
            if seg_ban:
                extra = extra | seg_ban
            if tokens and self.vocab.starts_word[tokens[-1]] and not self.vocab.has_comma[tokens[-1]]:
                extra = extra | {tokens[-1]}  # no "part part part": a word never follows itself
            repeats = set()
            if len(tokens) >= 2:  # no token trigram twice: "greg rutkowski and greg rutkowski" stops
                repeats |= self.trigrams[r].get((tokens[-2], tokens[-1]), set())
            if tokens:  # nor a pair of content words, whatever precedes it
                repeats |= self.word_pairs[r].get(tokens[-1], set())
            if repeats:
                extra = extra | repeats
                repeats_banned[r] = repeats
            cols = [t for t in extra if t < vocab_n]
            ban_rows += [r] * len(cols)
            ban_cols += cols
        if ban_cols:  # one write for all rows
            logits[ban_rows, ban_cols] = -math.inf
        if self.boost is not None:
            for r in range(self.n):
                nxt = self.boost.single_tokens() | self.boost.banned_after(self.tokens[r])
                if nxt:
                    logits[r, [t for t in nxt if t < vocab_n]] += self.boost_value
        if self.contrast > 0 and unconditional is not None:
            # After the bans: plausibility is judged against the best token the row may still write. Judged
            # against a banned one (the user's own word, say), nothing may pass and the row ends at once.
            past = [words >= self.contrast_words for words in self.words] if self.contrast_words else []
            if not (past and all(past)):
                scores = contrastive_scores(logits, unconditional.float(), self.contrast)
                if any(past):
                    scores = torch.where(torch.tensor(past, device=logits.device)[:, None], logits, scores)
                logits = scores
        if self.greedy:
            best, choice = logits.max(dim=-1)
        else:
            best, choice = self._sample(logits, vocab_n)
        dead = best == -math.inf  # everything banned: end the row rather than emit junk
        if eos is not None and bool(dead.any()):
            choice = torch.where(dead, torch.full_like(choice, eos), choice)
        choice_list = choice.tolist()
        for r, tok in enumerate(choice_list):
            if not self.done[r]:
                if r in repeats_banned and self.vocab.respells(tok, repeats_banned[r]):
                    self.respelled[r].add(self.row_bytes[r].count(b","))
                self._advance(r, tok)
            elif eos is not None:
                choice_list[r] = eos
        self.steps += 1
        return torch.tensor(choice_list, device=logits.device)

    def _sample(self, logits: torch.Tensor, vocab_n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Temperature, top-k, top-p, then a Gumbel-max draw over the surviving candidates.

        Same kept set as warp_logits (the transformers-order reference), but temperature, top-p and the
        noise run on the k candidates instead of the whole vocabulary (dividing by a positive temperature
        keeps the order, and gives the same values). Returns (best candidate logit, chosen token) per row.
        """
        k = self.top_k if 0 < self.top_k < vocab_n else vocab_n
        values, index = torch.topk(logits, k, dim=-1)  # sorted, largest first
        values = values / self.temperature
        if self.top_p < 1.0:
            probs = values.softmax(dim=-1)
            before = probs.cumsum(dim=-1) - probs  # mass of the likelier candidates
            drop = before >= self.top_p
            drop[..., 0] = False
            values = values.masked_fill(drop, -math.inf)
        noise = gumbel_rows([None if d else g for g, d in zip(self.generators, self.done)], k).to(values.device)
        best = (values + noise).argmax(dim=-1, keepdim=True)
        return values[:, 0], index.gather(-1, best).squeeze(-1)

    def _fits(self, r: int) -> bool:
        """Row r's tokens so far fit the budget."""
        return self._row_count(r) <= self.budget

    def _row_count(self, r: int) -> int:
        """count(separator + row r's text), asked at every word of every row.

        With our own approximate counter only the bytes added since the last count are counted, where
        count_adds_up_at says the join cannot change a piece; counting the whole row each time cost time
        that grew with its length, times the rows. A host's counter always gets the whole text.
        """
        data, (done, n) = self.row_bytes[r], self.counted[r]
        if done and done == len(data):
            return n
        if self.count is approx_clip_tokens and done and count_adds_up_at(data[done]):
            n += approx_clip_tokens(data[done:].decode("utf-8", "ignore"))
        else:
            n = self.count(self.separator + data.decode("utf-8", "ignore"))
        self.counted[r] = (len(data), n)
        return n

    def _advance(self, r: int, tok: int) -> None:
        tokens = self.tokens[r]
        is_eos = tok == self.vocab.eos_id
        if is_eos or self.vocab.starts_word[tok]:
            # Everything before this token is whole words: remember it if it still fits the budget.
            if self._fits(r):
                self.clean_len[r] = len(tokens)
            elif tokens:
                self.done[r] = True
                return
        if is_eos:
            self.done[r] = True
            self.ended_by_eos[r] = True
            return
        if self.vocab.starts_word[tok]:
            if self.pause_at_words and self.words[r] >= self.pause_at_words:
                self.done[r] = self.paused[r] = True
                return
            self.words[r] += 1
        if len(tokens) >= 2:
            self.trigrams[r].setdefault((tokens[-2], tokens[-1]), set()).add(tok)
        if tokens and self.vocab.content_word[tokens[-1]] and self.vocab.content_word[tok]:
            self.word_pairs[r].setdefault(tokens[-1], set()).add(tok)
        tokens.append(tok)
        self.row_bytes[r] += self.vocab.token_bytes[tok]
        if self.vocab.has_comma[tok]:
            seg = self.segment[r]
            if seg:  # a finished modifier may not be written again
                self.segment_bans[r].add(seg)
            self.segment[r] = []
        else:
            self.segment[r].append(tok)
        if len(tokens) >= self.max_new_tokens:
            self.done[r] = True

    def replay(self, other: "RowDecoder", r: int) -> None:
        """Make this one-row decoder row r of `other`, paused: its tokens, bans, budget count and the state of its
        generator, so that decoding on samples the rest of that row (its tokens go after the context)."""
        if self.n != 1 or self.steps:
            raise ValueError("replay needs a fresh one-row decoder")
        self.generators[0].set_state(other.generators[r].get_state())
        for tok in other.tokens[r]:
            self._advance(0, tok)
        self.respelled[0] = set(other.respelled[r])
        self.steps = len(self.tokens[0])

    def row_text(self, r: int) -> str:
        """The row's text up to its last clean stop: the end, or the last comma before a cut modifier.

        A row cut by the budget or the token limit stops at a word boundary. When the next word carried
        on the same modifier ("..., by greg" of "by greg rutkowski") that modifier is dropped, since half
        of one says something else; when it was a comma or a connector ("by greg rutkowski" + "and")
        the words kept are a whole phrase. A row whose only modifier was cut keeps it. The modifiers in
        `respelled` are left out."""
        tokens, end = self.tokens[r], self.clean_len[r]
        text = self.vocab.decode(tokens[:end])
        after = self.vocab.decode(tokens[end:end + 4]).lstrip()
        first = after.split(None, 1)[0].strip(",;:.!?\"'").lower() if after else ""
        complete = end == len(tokens) or after.startswith(",") or first in DANGLING
        if not complete and "," in text:
            text = text[: text.rfind(",")]
        if self.respelled[r]:
            text = ",".join(part for i, part in enumerate(text.split(",")) if i not in self.respelled[r])
        return text
