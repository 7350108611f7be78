"""CLIP-token budgets: how much room an expansion has in the prompt's current 75-token chunk."""
from __future__ import annotations

import math
import re
from typing import Callable

from .syntax import ParsedPrompt, parse_prompt

CHUNK = 75
MIN_ROOM = 20  # below this much room left in a chunk, the expansion starts a new chunk instead

TokenCounter = Callable[[str], int]

# CLIP's own pre-tokeniser splits like this; its 49k BPE keeps most English words whole.
_CLIP_PIECES = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+", re.IGNORECASE)
_WHOLE_WORD_CHARS = 8  # CLIP keeps common words up to about this long as one token
_EXTRA_CHARS_PER_TOKEN = 6


def approx_clip_tokens(text: str) -> int:
    """Approximate CLIP token count, used when the host passes no tokenizer.

    Each digit and each punctuation character counts 1 token; a word of up to 8 letters counts 1,
    and a longer one 1 more per 6 further letters (CLIP keeps common words whole and splits long
    rare words and names). It errs on the high side, so a budget checked with it is not overrun.
    """
    n = 0
    for piece in _CLIP_PIECES.findall(text.lower()):
        if piece[0].isalpha():
            n += 1 + max(0, math.ceil((len(piece) - _WHOLE_WORD_CHARS) / _EXTRA_CHARS_PER_TOKEN))
        elif piece[0].isdigit():
            n += 1
        else:
            n += len(piece)
    return n


def count_adds_up_at(byte: int) -> bool:
    """Whether approx_clip_tokens(a + b) == approx_clip_tokens(a) + approx_clip_tokens(b) for every a, when b's
    UTF-8 starts with this byte.

    ASCII whitespace or punctuation other than an apostrophe ends any piece a ends with (a punctuation run
    that goes on across the join counts one per character, so it adds up too), and an ASCII byte also ends
    any half character a ends with, which decoding drops either way. Letters, digits and "'s" do not.
    """
    return byte < 0x80 and not chr(byte).isalnum() and byte != ord("'")


def clip_budget(user_text: str | ParsedPrompt, requested: int | None = None, count: TokenCounter | None = None) -> int:
    """CLIP tokens the expansion (its ", " separator included) may use.

    `requested` > 0 is taken as is. Otherwise: fill to the end of the current 75-token chunk, or
    to the end of the next one when fewer than MIN_ROOM tokens are left, so a long prompt never
    leaves the expansion with nothing.
    """
    if requested is not None and requested > 0:
        return int(requested)
    count = count or approx_clip_tokens
    prompt = user_text if isinstance(user_text, ParsedPrompt) else parse_prompt(user_text)
    used = count(prompt.last_chunk_plain)
    room = CHUNK - used % CHUNK if used % CHUNK or used == 0 else 0
    if room < MIN_ROOM:
        room += CHUNK
    return room


def chunks_needed(n_tokens: int) -> int:
    return max(1, math.ceil(n_tokens / CHUNK))
