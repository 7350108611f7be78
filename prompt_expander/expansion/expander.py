"""The Expander: one resident model with its adapters, and seeded, syntax-safe expansion."""
from __future__ import annotations

import math
import random
import re
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

import torch

from . import syntax
from ..model.adapters import adapter_signature, base_fingerprint, load_adapter_deltas
from .budget import approx_clip_tokens, clip_budget
from .decoding import (FastGPT2, decode_fast, decode_groups, decode_rests, decode_reference, holds_fp16_values,
                       ieee_fp32_matmul, weights_changed)
from ..errors import AdapterError, InputError, ModelLoadError, NegativeNotSupportedError
from ..fragments import fragments, read_known_words, words_in
from ..limits import (MAX_ADAPTER_WEIGHT, MAX_CANDIDATES, MAX_CONTRAST, MAX_CONTRAST_WORDS, MAX_PICK_WORDS, MAX_ROWS,
                      MAX_VARIATIONS, check_text)
from ..model.meta import ModelMeta, file_inside
from .on_topic import OnTopicPicker, Picker, WordVectorPicker, candidate_seeds
from ..paths import BUNDLED_LORAS
from .sampling import RowDecoder, normalise_seed
from ..splits import join_compounds, tidy_splits
from ..draft_tokens import DraftTable
from ..word_vectors import WordVectors
from ..topics import TOPIC_TOKEN, tagged
from .vocab import BanTable, VocabInfo
from ..wordlists import WordMatcher, nsfw_words, parse_words, read_words

SEPARATOR = ", "
DANGLING = syntax.DANGLING
_WEIGHT_SUFFIX = re.compile(r":[-+]?(?:[\d.]+(?:e[-+]?\d+)?|nan|inf(?:inity)?)$", re.IGNORECASE)
_DANGLING_PHRASES = ("in the style", "in style", "the style", "style of", "art by", "painted by", "drawn by")


@dataclass(frozen=True)
class ExpandSettings:
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    budget: int = 0  # CLIP tokens for the addition; 0 fills the current 75-token chunk
    safe_mode: bool = True
    blocklist: tuple[str, ...] = ()
    positive_vocab: tuple[str, ...] = ()
    positive_bias: float = 2.0
    min_new_tokens: int = 4
    negative: bool = False
    # lambda of concept-contrastive decoding: log p(x | input) - lambda * log p(x | no input);
    # None: the model's own (ModelMeta.contrast). Results record the number used.
    contrast: float | None = None
    # contrast chooses the first this-many words of an addition, the model alone the rest (the gain in
    # specificity is the first words', and a decode without the no-input row is faster); 0 = every word;
    # None: the model's own (ModelMeta.contrast_words)
    contrast_words: int | None = None
    fast: bool = True  # False runs the stock transformers generate() loop (the reference)
    # additions sampled per expansion, the most on-topic kept (see on_topic.py); 1 = off, the plain expansion;
    # None: the model's own (ModelMeta.candidates)
    candidates: int | None = None
    # with candidates > 1: pick by each candidate's first this-many words, and decode only the chosen one on
    # (Expander._decode_picked_prefixes); 0 = decode every candidate to its end and pick by the whole addition;
    # None: the model's own (ModelMeta.pick_words)
    pick_words: int | None = None

    def validated(self) -> "ExpandSettings":
        t, k, p = self.temperature, self.top_k, self.top_p
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise InputError(f"temperature must be a number, got {t!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise InputError(f"top_k must be a whole number >= 0 (0 turns it off), got {k!r}")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not (0 < p <= 1):
            raise InputError(f"top_p must be in (0, 1], got {p!r}")
        c = self.contrast
        if c is not None and (isinstance(c, bool) or not isinstance(c, (int, float)) or not (0 <= c <= MAX_CONTRAST)):
            raise InputError(f"contrast must be a number from 0 (off) to {MAX_CONTRAST}, got {c!r}")
        w = self.contrast_words
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or not 0 <= w <= MAX_CONTRAST_WORDS):
            raise InputError(f"contrast_words must be a whole number from 0 (every word) to {MAX_CONTRAST_WORDS}, "
                             f"got {w!r}")
        k = self.candidates
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_CANDIDATES):
            raise InputError(f"candidates must be a whole number from 1 (off) to {MAX_CANDIDATES}, got {k!r}")
        w = self.pick_words
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or not 0 <= w <= MAX_PICK_WORDS):
            raise InputError(f"pick_words must be a whole number from 0 (the whole addition) to {MAX_PICK_WORDS}, "
                             f"got {w!r}")
        if isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget < 0:
            raise InputError(f"budget must be a whole number of CLIP tokens >= 0 (0 = auto), got {self.budget!r}")
        return self

    def public(self) -> dict:
        d = asdict(self)
        d["blocklist"], d["positive_vocab"] = list(self.blocklist), list(self.positive_vocab)
        return d


@dataclass
class ExpansionResult:
    """Everything a host needs to show, store in image metadata and reproduce an expansion."""
    text: str
    added: str
    original: str
    seed: int
    clip_tokens: int
    clip_budget: int
    model: str
    adapters: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return self.text


def _as_words(value, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(parse_words(check_text(value, what)))
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{what} must be a comma-separated string or a list of strings, got {value!r}")
    return tuple(w for item in value for w in parse_words(check_text(item, what)))


def checked_counter(count):
    """A host's CLIP token counter, with any answer that is not a whole number >= 0 turned into an InputError."""
    if not callable(count):
        raise InputError(f"count must be a function from text to a number of CLIP tokens, got {count!r}")

    def counted(text: str) -> int:
        n = count(text)
        if isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(n) or n < 0:
            raise InputError(f"the CLIP token counter returned {n!r} for {text[:40]!r}; a whole number >= 0 is needed")
        return int(n)
    return counted


def make_settings(**kw) -> ExpandSettings:
    for key in ("blocklist", "positive_vocab"):
        if key in kw:
            kw[key] = _as_words(kw[key], key)
    unknown = set(kw) - set(ExpandSettings.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown expand settings: {sorted(unknown)}")
    return ExpandSettings(**kw).validated()


class Expander:
    def __init__(self, model, tokenizer, folder: Path | None, model_id: str):
        self.model, self.tokenizer = model, tokenizer
        self.folder, self.model_id = folder, model_id
        self.meta = ModelMeta.read(folder)
        self.vocab = VocabInfo(tokenizer, model.get_input_embeddings().weight.shape[0])
        self.fingerprint = base_fingerprint(model)
        self.adapters: dict[str, dict[str, torch.Tensor]] = {}
        self._adapter_paths: dict[Path, tuple[str, tuple]] = {}  # resolved folder -> (name, file signature)
        self._base_weights: dict[str, torch.Tensor] = {}
        self._fp16_valued: dict[str, bool] = {}  # per base weight: all its values are fp16 values
        self._active_style: tuple = ()
        self._ban_cache: dict = {}
        self._known_words: frozenset | None = None
        self._word_vectors: WordVectors | None = None
        self._draft_tokens: DraftTable | None = None
        self.guess_tokens = True
        self._lock = threading.RLock()
        self.fast_supported = getattr(model.config, "model_type", None) in FastGPT2.SUPPORTED
        self.n_positions = (getattr(model.config, "n_positions", None)
                            or getattr(model.config, "max_position_embeddings", None) or 1024)

    # ----- adapters ---------------------------------------------------------------------------
    def resolve_adapter(self, name_or_path: str, search: Iterable[Path] = ()) -> Path:
        p = Path(name_or_path).expanduser()
        if p.is_dir():
            return p.resolve()
        for root in [*search, BUNDLED_LORAS]:
            if (Path(root) / name_or_path).is_dir():
                return (Path(root) / name_or_path).resolve()
        raise AdapterError(f"no adapter {name_or_path!r} (looked in {', '.join(str(r) for r in [*search, BUNDLED_LORAS])})")

    def load_adapter(self, name_or_path: str, name: str | None = None, search: Iterable[Path] = ()) -> str:
        """Load a PEFT LoRA folder once; later style switches reuse it. Returns the name styles use for it.

        Adapters are known by resolved folder and file signature, not by folder name: '/x/photo' after the
        bundled 'photo' is another adapter (named by its path), and a folder retrained in place is reloaded."""
        path = self.resolve_adapter(name_or_path, search)
        signature = adapter_signature(path)
        with self._lock:
            known = self._adapter_paths.get(path)
            if known is not None and known[1] == signature:
                return known[0]
            if known is not None:
                key = known[0]
            else:
                key = name or path.name
                if key in self.adapters:
                    key = str(path)
            self._set_style(())  # peft must see the pristine base weights
            deltas = load_adapter_deltas(self.model, path, self.model_id)
            params = dict(self.model.named_parameters())
            missing = [k for k in deltas if k not in params]
            if missing:
                raise AdapterError(f"adapter {key!r} targets layers the base lacks: {missing[:3]}")
            self.adapters[key] = {k: v.to(params[k].device) for k, v in deltas.items()}
            self._adapter_paths[path] = (key, signature)
        return key

    def parse_styles(self, specs, search: Iterable[Path] = ()) -> tuple:
        """['photo', 'anime:0.5', 'path/to/lora:0.7'] -> (('photo', 1.0), ('anime', 0.5), ...), loading as needed."""
        out = []
        for spec in specs or ():
            if isinstance(spec, (tuple, list)):
                if len(spec) != 2 or not isinstance(spec[0], str):
                    raise InputError(f"a style is 'name', 'name:weight' or (name, weight), got {spec!r}")
                ref, weight = spec
                if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                    raise InputError(f"bad adapter weight in {spec!r}: a number is needed")
                weight = float(weight)
            elif not isinstance(spec, str):
                raise InputError(f"a style is 'name', 'name:weight' or (name, weight), got {spec!r}")
            else:
                ref, _, w = str(spec).rpartition(":") if _WEIGHT_SUFFIX.search(spec) else (spec, "", "1")
                try:
                    weight = float(w)
                except ValueError:
                    raise InputError(f"bad adapter weight in {spec!r}") from None
            if not math.isfinite(weight) or abs(weight) > MAX_ADAPTER_WEIGHT:
                raise InputError(f"adapter weight in {spec!r} must be a number from -{MAX_ADAPTER_WEIGHT:g} "
                                 f"to {MAX_ADAPTER_WEIGHT:g}")
            out.append((self.load_adapter(ref, search=search), weight))
        return tuple((n, w) for n, w in out if w != 0)

    @torch.no_grad()
    def _set_style(self, style: tuple) -> None:
        """Rewrite the targeted weights in place as base + sum(weight * delta); the base is never reloaded.

        Where a base weight holds only fp16 values (a model saved in fp16, loaded in fp32), the mix is rounded
        to fp16 values too: the styled model is then the one its merge saved in fp16 would be, and the fast
        loop keeps it in fp16 as it does the base (decoding.Fp16ValuedWeight), at the base's speed."""
        if style == self._active_style:
            return
        params = dict(self.model.named_parameters())
        touched = {k for name, _ in style for k in self.adapters[name]} | set(self._base_weights)
        for k in touched:
            if k not in self._base_weights:
                self._base_weights[k] = params[k].detach().clone()
                self._fp16_valued[k] = holds_fp16_values(self._base_weights[k])
            dev = params[k].device  # a host may have moved the model since the adapter was loaded
            new = self._base_weights[k].to(dev, torch.float32)
            for name, weight in style:
                delta = self.adapters[name].get(k)
                if delta is not None:
                    new = new + weight * delta.to(dev)
            if self._fp16_valued[k] and params[k].dtype == torch.float32:
                rounded = new.half()
                new = rounded.float() if bool(torch.isfinite(rounded).all()) else new
            params[k].copy_(new.to(params[k].dtype))
        weights_changed(self.model)
        self._active_style = style

    def model_for_style(self, style: tuple):
        with self._lock:
            self._set_style(tuple(style))
        return self.model

    # ----- expansion --------------------------------------------------------------------------
    def _bans(self, settings: ExpandSettings, user_words: tuple[str, ...]) -> BanTable:
        cased = not self.meta.lowercase

        def table(key, words):
            if key not in self._ban_cache:
                self._ban_cache[key] = BanTable().add_words(self.tokenizer, words, cased)
            return self._ban_cache[key]

        bans = table(("blocklist", settings.blocklist), settings.blocklist)
        if settings.safe_mode:
            bans = bans.merge(table(("nsfw",), nsfw_words()))
        return bans.merge(BanTable().add_words(self.tokenizer, user_words, cased))

    def _boost(self, settings: ExpandSettings) -> BanTable | None:
        """Phrases of the positive vocabulary: each next token of a phrase being written gets the bias."""
        if not settings.positive_vocab:
            return None
        key = ("boost", settings.positive_vocab)
        if key not in self._ban_cache:
            words = [w.lower() for w in settings.positive_vocab] if self.meta.lowercase else settings.positive_vocab
            self._ban_cache[key] = BanTable().add_words(self.tokenizer, words, cased=False, every_prefix=True,
                                                        bare=False)
        return self._ban_cache[key]

    def _in_model_case(self, plain: str) -> str:
        """The user's text as the model's corpus writes it: lower-cased for a lower-case model."""
        return plain.lower() if self.meta.lowercase else plain

    def _context_ids(self, plain: str, max_new: int) -> list[int]:
        text = self._in_model_case(plain)
        if text and self.meta.topic_tags:  # as in training: the subject, the topic token, then the prompt
            text = tagged(text)
        # The trailing comma asks the model for a new modifier: the expansion never edits the user's last phrase.
        body = self.tokenizer.encode(text + ",", add_special_tokens=False, verbose=False) if text else []
        start = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.vocab.eos_id
        room = max(1, self.n_positions - max_new - 1)
        return [start, *body[-room:]]  # a huge prompt keeps its end: what the expansion follows

    def _unconditional_ids(self) -> list[int]:
        """Contrastive decoding's "no input": the place where a modifier follows a subject, with no subject."""
        start = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.vocab.eos_id
        no_subject = (TOPIC_TOKEN if self.meta.topic_tags else "") + ","
        return [start, *self.tokenizer.encode(no_subject, add_special_tokens=False)]

    def expand(self, text: str, seed=0, **kw) -> ExpansionResult:
        return self.expand_many(text, 1, seed, **kw)[0]

    def expand_many(self, text: str, n: int, seed=0, *, styles=(), count: Callable[[str], int] | None = None,
                    should_stop: Callable[[], None] | None = None, on_progress: Callable[[int, int], None] | None = None,
                    **kw) -> list[ExpansionResult]:
        """n variations in one batched decode; variation i is exactly expand(text, seed + i)."""
        prompt = self._parsed(text, "the prompt")  # once: the budget, the decode and the tidy-up all read it
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_VARIATIONS:
            raise InputError(f"number of variations must be from 1 to {MAX_VARIATIONS}, got {n!r}")
        settings = self._settings(kw)
        base_seed = normalise_seed(seed)
        seeds = [normalise_seed(base_seed + i) for i in range(n)]
        count_fn = approx_clip_tokens if count in (None, approx_clip_tokens) else checked_counter(count)
        budget = clip_budget(prompt, settings.budget, count_fn)
        with self._lock:
            style = self.parse_styles(styles)
            self._set_style(style)
            if settings.negative:
                added = [self._negative(text, s, budget, count_fn) for s in seeds]
            else:
                added = self._decode(prompt, seeds, settings, budget, count_fn, should_stop, on_progress)
        return [self._result(text, add, s, budget, count_fn, style, settings) for s, add in zip(seeds, added)]

    @staticmethod
    def _parsed(text: str, what: str) -> syntax.ParsedPrompt:
        """The user's text parsed, once it passed the input checks; `what` names it in the error."""
        check_text(text)
        if not text.strip():
            raise InputError(f"nothing to expand: {what} is empty")
        return syntax.parse_prompt(text)

    def _settings(self, kw: dict) -> ExpandSettings:
        """Checked settings, with the model's own contrast, contrast words and pick where the caller gave none."""
        settings = make_settings(**kw)
        own = {name: getattr(self.meta, name) for name in ("contrast", "contrast_words", "candidates", "pick_words")
               if getattr(settings, name) is None}
        return replace(settings, **own) if own else settings

    def _result(self, text: str, add: str, seed: int, budget: int, count_fn, style, settings) -> ExpansionResult:
        return ExpansionResult(
            text=syntax.join_expansion(text, add), added=add, original=text, seed=seed,
            clip_tokens=count_fn(SEPARATOR + add) if add else 0, clip_budget=budget, model=self.model_id,
            adapters=[list(x) for x in style], settings=settings.public())

    def _picker(self, min_words: int = Picker.MIN_WORDS) -> Picker:
        """The on-topic pick's scorer: the model's word vectors where its folder has them, else its token
        embeddings."""
        word_vectors = self.word_vectors()
        if word_vectors is not None:
            return WordVectorPicker(word_vectors, min_words)
        return OnTopicPicker(self.tokenizer, self.model.get_input_embeddings().weight, min_words)

    def _decode(self, prompt: syntax.ParsedPrompt, seeds, settings, budget, count_fn, should_stop,
                on_progress) -> list[str]:
        """One addition per seed: the decoded one, or with settings.candidates > 1 the most on-topic of that
        many, sampled with candidate_seeds(seed) (the first is the plain expansion of the seed)."""
        k = settings.candidates
        if k == 1:
            return self._decode_rows(prompt, seeds, settings, budget, count_fn, should_stop, on_progress)
        if settings.pick_words:
            return self._decode_picked_prefixes(prompt, seeds, settings, budget, count_fn, should_stop, on_progress)
        picker = self._picker()
        subject = self._in_model_case(prompt.plain)
        batches = list(candidate_batches(seeds, k))
        parts = len(batches)
        picked = []
        for part, (group, rows) in enumerate(batches):
            progress = None if on_progress is None else (  # one bar over all the parts, not one per part
                lambda done, total, part=part: on_progress(part * total + done, parts * total))
            added = self._decode_rows(prompt, rows, settings, budget, count_fn, should_stop, progress)
            for i in range(len(group)):
                options = added[i * k:(i + 1) * k]
                picked.append(options[picker.pick(subject, options)])
        return picked

    def _decode_picked_prefixes(self, prompt: syntax.ParsedPrompt, seeds, settings, budget, count_fn, should_stop,
                                on_progress) -> list[str]:
        """Per seed, settings.candidates rows decoded to settings.pick_words words each, the most on-topic of
        those beginnings kept (the on-topic picker, no length rule: they are all as long) and only its row
        decoded on.
        In distribution that is the pick by the first words of whole candidates (the row's own continuation is
        one sample of the rest), at a fraction of their decode (docs/specificity.md: at 8 candidates and 20
        words, 0.051 specificity on PartiPrompts against 0.058 for the whole-addition pick and 0.032 for none).

        The beginnings of several seeds decode as one batch, as the whole pick's candidates do (a row's text does
        not depend on the rows beside it). The chosen rows go on from their own caches in shared steps, each
        attending over its own positions alone (decoding.decode_rests), or one after another where a row's
        matmul results could depend on the rows beside it, or where a row goes on with contrast (a prefill of
        its own): rows of beginnings that differ in length in one attention call could round otherwise than
        alone (see decoding.decode_groups)."""
        k = settings.candidates
        picker = self._picker(min_words=0)
        subject = self._in_model_case(prompt.plain)
        unconditional = self._unconditional_ids() if settings.contrast else None
        context = None
        picked: list[str | None] = []
        draft = self.draft_tokens()
        for group, options in candidate_batches(seeds, k):
            starts = self._row_decoder(prompt, options, settings, budget, count_fn, pause_at_words=settings.pick_words)
            if context is None:  # the same for every seed
                context = self._context_ids(prompt.plain, starts.max_new_tokens)
            self._run_decode(context, starts, settings, should_stop, unconditional)
            # scored tidied, as the whole-addition pick scores its candidates
            tidied = self._finished_rows(starts, prompt, settings, budget, count_fn)
            rests = []  # (where in picked, its context and tokens, its decoder, its cache) of rows going on together
            for i in range(len(group)):
                best = i * k + picker.pick(subject, tidied[i * k:(i + 1) * k])
                if not starts.paused[best]:  # it ended before its pick words: nothing to go on with
                    picked.append(tidied[best])
                else:
                    rows = self._row_decoder(prompt, [options[best]], settings, budget, count_fn)
                    rows.replay(starts, best)
                    begun = rows.tokens[0]
                    # with a draft, the row goes on from its own cache of the pick (no prefill)
                    if draft is not None and starts.paused_rows is not None and not rows.wants_unconditional:
                        rests.append((len(picked), context + begun, rows, starts.paused_rows.row(best)))
                        picked.append(None)
                        continue
                    self._run_decode(context + begun, rows, settings, should_stop,
                                     unconditional + begun if unconditional and rows.wants_unconditional else None,
                                     draft=draft)
                    picked.append(self._finished_rows(rows, prompt, settings, budget, count_fn)[0])
                if on_progress is not None:
                    on_progress(sum(p is not None for p in picked), len(seeds))
            if rests:
                with ieee_fp32_matmul(self.model.device):
                    decode_rests(self.model, [rest[1:] for rest in rests], draft, should_stop)
                for at, _, rows, _ in rests:
                    picked[at] = self._finished_rows(rows, prompt, settings, budget, count_fn)[0]
                if on_progress is not None:
                    on_progress(len(picked), len(seeds))
            starts.paused_rows = None  # the beginnings' caches, kept for the picked rows to go on from
        return picked

    def _row_decoder(self, prompt: syntax.ParsedPrompt, seeds, settings, budget, count_fn,
                     pause_at_words: int = 0) -> RowDecoder:
        max_new = min(budget * 2 + 8, self.n_positions // 2)
        return RowDecoder(self.vocab, self._bans(settings, prompt.content_words), seeds,
                          temperature=float(settings.temperature), top_k=settings.top_k, top_p=float(settings.top_p),
                          budget=budget, count=count_fn, separator=SEPARATOR,
                          min_new_tokens=min(settings.min_new_tokens, max_new), max_new_tokens=max_new,
                          boost=self._boost(settings), boost_value=settings.positive_bias,
                          contrast=float(settings.contrast), contrast_words=settings.contrast_words,
                          pause_at_words=pause_at_words)

    def _finished_rows(self, rows: RowDecoder, prompt: syntax.ParsedPrompt, settings, budget, count_fn) -> list[str]:
        blocked = WordMatcher([*settings.blocklist, *(nsfw_words() if settings.safe_mode else ()),
                               *prompt.content_words])
        known = self.known_words()
        allowed = (prompt.plain, *settings.positive_vocab)
        return [self.finish(rows.row_text(r), budget, count_fn, blocked, prompt, known, allowed) for r in range(rows.n)]

    def _run_decode(self, context: list[int], rows: RowDecoder, settings, should_stop, unconditional,
                    draft=None) -> None:
        """Decode the rows. `draft` only for a row that always decodes alone (a picked row's rest): a row decoded
        beside others steps with them, and must get the bits it gets alone (see decoding.decode_guessing)."""
        with ieee_fp32_matmul(self.model.device):
            if settings.fast and self.fast_supported:
                decode_fast(self.model, context, rows, should_stop, unconditional, draft)
            else:
                decode_reference(self.model, context, rows, should_stop, unconditional)

    def _decode_rows(self, prompt: syntax.ParsedPrompt, seeds, settings, budget, count_fn, should_stop,
                     on_progress) -> list[str]:
        rows = self._row_decoder(prompt, seeds, settings, budget, count_fn)
        context = self._context_ids(prompt.plain, rows.max_new_tokens)
        unconditional = self._unconditional_ids() if settings.contrast else None
        stop = should_stop
        if on_progress is not None:
            def stop():
                on_progress(rows.steps, rows.max_new_tokens)
                if should_stop is not None:
                    should_stop()
        self._run_decode(context, rows, settings, stop, unconditional)
        return self._finished_rows(rows, prompt, settings, budget, count_fn)

    def expand_subjects(self, texts: list[str], seed=0, *, styles=(), **kw) -> list[ExpansionResult]:
        """texts[i] expanded with seed + i, every text in the same decode steps: for building training data
        (self-distill), where one decode of many subjects costs little more than one of a single subject.

        Each result is a sample of expand(texts[i], seed + i, ...) with the same settings, but its text can
        differ from that call's (see decoding.decode_groups), so hosts, whose seeds must reproduce, use expand().
        Negative mode, the reference decode and pick_words have no batched form here."""
        settings = self._settings(kw)
        if settings.negative or not settings.fast or not self.fast_supported:
            raise InputError("expand_subjects needs the fast decode of a positive prompt: use expand()")
        if settings.pick_words and settings.candidates > 1:
            raise InputError(f"expand_subjects picks by whole additions, not by the first {settings.pick_words} "
                             "words (pick_words, perhaps the model's own): pass pick_words=0, or use expand()")
        if isinstance(texts, str):
            raise InputError("expand_subjects takes a list of texts; for one text use expand()")
        texts = list(texts)
        k = settings.candidates
        if not texts:
            return []
        if len(texts) * k > MAX_ROWS:
            raise InputError(f"{len(texts)} texts x {k} candidates is over {MAX_ROWS} rows: pass fewer texts")
        prompts, budgets, groups, contexts, seeds = [], [], [], [], []
        for i, text in enumerate(texts):
            prompt = self._parsed(text, f"text {i}")
            budget = clip_budget(prompt, settings.budget, approx_clip_tokens)
            s = normalise_seed(normalise_seed(seed) + i)
            rows = self._row_decoder(prompt, candidate_seeds(s, k), settings, budget, approx_clip_tokens)
            prompts.append(prompt)
            budgets.append(budget)
            groups.append(rows)
            seeds.append(s)
            contexts.append(self._context_ids(prompt.plain, rows.max_new_tokens))
        with self._lock:
            style = self.parse_styles(styles)
            self._set_style(style)
            with ieee_fp32_matmul(self.model.device):
                decode_groups(self.model, contexts, groups, self._unconditional_ids() if settings.contrast else None)
            picker = self._picker() if k > 1 else None
            results = []
            for text, prompt, budget, rows, s in zip(texts, prompts, budgets, groups, seeds):
                options = self._finished_rows(rows, prompt, settings, budget, approx_clip_tokens)
                add = options[picker.pick(self._in_model_case(prompt.plain), options)] if picker else options[0]
                results.append(self._result(text, add, s, budget, approx_clip_tokens, style, settings))
        return results

    def known_words(self) -> frozenset | None:
        """The words of the model's training corpus (see ModelMeta.known_words), read once; None without a list."""
        name = self.meta.known_words
        if self._known_words is None and name and self.folder is not None:
            path = file_inside(self.folder, name, "known_words")
            try:
                self._known_words = read_known_words(path)
            except (OSError, EOFError) as e:
                raise ModelLoadError(f"{path}: cannot read the model's known words ({e})") from None
        return self._known_words

    def draft_tokens(self) -> DraftTable | None:
        """The model's draft table (see ModelMeta.draft_tokens), read once; None without one, or when
        self.guess_tokens is off (benchmarks time the decode without it)."""
        name = self.meta.draft_tokens
        if not self.guess_tokens or not name or self.folder is None:
            return None
        if self._draft_tokens is None:
            self._draft_tokens = DraftTable.load(file_inside(self.folder, name, "draft_tokens"),
                                                 self.model.config.vocab_size)
        return self._draft_tokens

    def word_vectors(self) -> WordVectors | None:
        """The model's word vectors (see ModelMeta.word_vectors), read once; None without them."""
        name = self.meta.word_vectors
        if self._word_vectors is None and name and self.folder is not None:
            self._word_vectors = WordVectors.load(file_inside(self.folder, name, "word_vectors"))
        return self._word_vectors

    @staticmethod
    def finish(added: str, budget: int, count_fn, blocked: WordMatcher, prompt: syntax.ParsedPrompt,
               known: frozenset | None = None, allowed=()) -> str:
        """Clean the decoded addition: no syntax, no repeated (see syntax.modifier_key), blocked or broken
        modifier, no dangling ending. Modifiers are those of syntax.split_modifiers, and come back joined by
        commas.

        For a model that lists its `known` words, a split compound it lists is joined ('william - adolphe'
        becomes 'william-adolphe'), and a modifier is dropped when it holds a fragment (see
        fragments.fragments): a bot flag, a stray or mangled number, a letter split off a word, or a word its
        corpus never writes and the user's text and positive vocabulary (`allowed`) do not have."""
        added = tidy_splits(syntax.sanitize_added(added))
        if known is not None:
            added = join_compounds(added, known)
        allowed_words = {w for text in allowed for w in words_in(text)}
        seen = {syntax.modifier_key(s) for s in prompt.segments}
        segments, segment_words = [], []
        for seg in syntax.split_modifiers(added):
            seg = syntax.drop_repeated_items(seg)  # "sunglasses and a top hat and sunglasses"
            key = syntax.modifier_key(seg)  # "volumetric light" repeats "volumetric lighting"
            words = syntax.modifier_words(seg)
            # a lone character ("8", "d") is a cut-off fragment, not a modifier
            if len(seg) <= 1 or key in seen or syntax.repeats_an_earlier_modifier(words, segment_words) \
                    or (blocked and blocked.search(seg)) \
                    or (known is not None and fragments(seg, known, allowed_words)):
                continue
            seen.add(key)
            segments.append(seg)
            segment_words.append(words)
        added = SEPARATOR.join(segments)
        while added and count_fn(SEPARATOR + added) > budget:
            added = added[: max(added.rfind(" "), 0)]
        return strip_dangling(added)

    def _negative(self, text: str, seed: int, budget: int, count_fn) -> str:
        """Negative mode: seeded picks from the model's negative vocabulary that the prompt lacks."""
        vocab_file = self.meta.negative_vocabulary
        path = file_inside(self.folder, vocab_file, "negative_vocabulary") if vocab_file and self.folder else None
        if path is None or not path.is_file():
            raise NegativeNotSupportedError(
                f"model {self.model_id!r} has no negative-prompt behaviour (no negative vocabulary in its "
                "prompt_expander.json); expand only the positive prompt with it")
        terms = read_words(path)
        present = WordMatcher(terms)
        have = set(present.findall(text))
        pool = [t for t in terms if t not in have]
        random.Random(seed).shuffle(pool)
        picked: list[str] = []
        for term in pool:
            if count_fn(SEPARATOR + SEPARATOR.join(picked + [term])) > min(budget, 40):
                break
            picked.append(term)
        return SEPARATOR.join(picked)


def candidate_batches(seeds: list[int], k: int):
    """The seeds in groups whose k candidate rows each fit one decode (MAX_ROWS), with those rows' seeds. A row's
    text does not depend on the rows beside it, so the grouping never changes a seed's pick."""
    per_decode = max(1, MAX_ROWS // k)
    for start in range(0, len(seeds), per_decode):
        group = seeds[start:start + per_decode]
        yield group, [c for s in group for c in candidate_seeds(s, k)]


def strip_dangling(text: str) -> str:
    """Never end on a half phrase: a trailing comma, "by", "and", "in the style" and the like."""
    while True:
        text = text.rstrip(" ,;:-&+/.'\"!?")
        lower = text.lower()
        cut = next((p for p in _DANGLING_PHRASES if lower.endswith(" " + p) or lower == p), None)
        if cut:
            text = text[: len(text) - len(cut)]
            continue
        words = text.rsplit(None, 1)
        if words and (words[-1].lower() in DANGLING or (len(words[-1]) == 1 and words[-1].isdigit())):
            text = words[0] if len(words) > 1 else ""
            continue
        return text
