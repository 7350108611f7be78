"""The syntax guard: plain words for the model's context, and a join that never breaks prompt syntax."""
from __future__ import annotations

import re
from dataclasses import dataclass

# Words that never end a prompt; after a cut, as the next word, they show the words before were a whole phrase.
DANGLING = frozenset("a an the and or of by with in on at to for from as into onto over under like featuring feat "
                     "ft inspired trending very highly while during its his her their this that".split())

# Characters that carry meaning in A1111/ComfyUI/dynamic-prompts syntax. The expansion never contains
# them, so whatever it appends cannot open, close or re-weight anything.
SYNTAX_CHARS = frozenset("()[]{}<>|\\:_")
_KEYWORDS = re.compile(r"\b(?:BREAK|AND)\b")  # upper-case only: that is how the hosts spell them

_EXTRA_NETWORK = re.compile(r"<[^<>]*>")
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_WILDCARD = re.compile(r"__([^_\s](?:[^\s]*?[^_\s])?)__")
_VARIANT = re.compile(r"\{([^{}]*)\}")
_VARIANT_PREFIX = re.compile(r"^\s*[\d\-\s]*\$\$(?:[^$]*\$\$)?")
_SQUARE = re.compile(r"\[([^\[\]]*)\]")
_EDIT_FROM_TO = re.compile(r"^(.*?):(.*):\s*[\d.]+\s*$", re.DOTALL)
_EDIT_ADD = re.compile(r"^(.*):\s*[\d.]+\s*$", re.DOTALL)
_ROUND = re.compile(r"\(([^()]*)\)")
_WEIGHT = re.compile(r":\s*-?[\d.]+\s*$")
_EMBEDDING = re.compile(r"\bembedding:[^\s,()\[\]{}<>]+", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
_WS = re.compile(r"\s+")
_SYNTAX_RUN = re.compile("[" + re.escape("".join(sorted(SYNTAX_CHARS))) + "]+")


def _innermost(pattern: re.Pattern, text: str, repl) -> str:
    """Apply `repl` to innermost bracket pairs until none are left (handles nesting)."""
    for _ in range(1000):
        new = pattern.sub(repl, text)
        if new == text:
            return new
        text = new
    return text


def _square(m: re.Match) -> str:
    body = m.group(1)
    if "|" in body:  # alternation [a|b]: the first alternative stands for all
        return " " + body.split("|", 1)[0] + " "
    edit = _EDIT_FROM_TO.match(body)
    if edit:  # [from:to:when]: the prompt ends on "to"
        to, frm = edit.group(2).strip(), edit.group(1).strip()
        return " " + (to or frm) + " "
    add = _EDIT_ADD.match(body)
    if add:  # [x:when] adds x, [x::when] removes it
        return " " + add.group(1).rstrip(":") + " "
    return " " + body + " "


def _variant(m: re.Match) -> str:
    options = _VARIANT_PREFIX.sub("", m.group(1)).split("|")
    return " " + options[0] + " "


def plain_words(text: str) -> str:
    """The words of a prompt with every piece of syntax resolved or removed.

    This is the only thing the model sees of the user's prompt. The result contains no SYNTAX_CHARS.
    """
    text = _CONTROL.sub(" ", text)
    text = text.replace("\r", "\n")
    text = _ESCAPE.sub(lambda m: " " if m.group(1) in SYNTAX_CHARS else m.group(0), text)
    text = _EXTRA_NETWORK.sub(" ", text)
    text = _WILDCARD.sub(lambda m: " " + re.sub(r"[/_\-]+", " ", m.group(1)) + " ", text)
    text = _innermost(_VARIANT, text, _variant)
    text = _innermost(_ROUND, text, lambda m: " " + _WEIGHT.sub("", m.group(1)) + " ")
    text = _innermost(_SQUARE, text, _square)
    text = _EMBEDDING.sub(" ", text)
    text = _KEYWORDS.sub(",", text)
    text = text.replace("\n", ",")
    text = _SYNTAX_RUN.sub(" ", text)
    parts = [_WS.sub(" ", p).strip() for p in text.split(",")]
    return ", ".join(p for p in parts if p)


def strip_trailing(text: str) -> str:
    """The user's text with trailing whitespace and commas removed: the only normalisation allowed."""
    return text.rstrip().rstrip(",").rstrip()


def join_expansion(user_text: str, added: str) -> str:
    """User text verbatim (bar trailing whitespace/comma), then the expansion as new comma segments."""
    base = strip_trailing(user_text)
    if not added:
        return base
    if not base:
        return added
    trailing_backslashes = len(base) - len(base.rstrip("\\"))
    sep = " , " if trailing_backslashes % 2 else ", "  # never let a trailing "\" escape our comma
    return base + sep + added


def sanitize_added(text: str) -> str:
    """Belt and braces for the expansion: drop syntax characters and keywords, tidy commas."""
    text = _CONTROL.sub(" ", text).replace("\n", " ")
    text = _SYNTAX_RUN.sub(" ", text)
    text = _KEYWORDS.sub(",", text)
    parts = [_WS.sub(" ", p).strip() for p in text.split(",")]
    return ", ".join(p for p in parts if p)


# Abbreviations whose period ends no sentence: "st. louis", "dr. seuss", "no. 5".
_ABBREVIATIONS = frozenset("st dr mr mrs ms jr sr vs ft feat no vol mt prof gen lt capt sgt col rev fig op ca "
                           "approx etc inc co ltd".split())
# A period that ends a phrase: after a number or a word of two or more characters, before a space or the end.
# "h.r. giger", "j. c. leyendecker" and "f/1.8" keep theirs.
_SENTENCE_END = re.compile(r"(?:(?<=\w\w)|(?<=\d))\.+(?=\s|$)")


def split_modifiers(text: str) -> list[str]:
    """The modifiers of an addition: its comma segments, with a segment cut again where a period ends a
    phrase ("artstation hd. masterpiece. 8k."), so that each is checked, de-duplicated and joined alone."""
    out = []
    for seg in text.split(","):
        start = 0
        for m in _SENTENCE_END.finditer(seg):
            if seg[:m.start()].rsplit(None, 1)[-1].lower() in _ABBREVIATIONS:  # a word char precedes the period
                continue
            out.append(seg[start:m.start()])
            start = m.end()
        out.append(seg[start:])
    return [" ".join(s.split()) for s in out if s.strip()]


_STOPWORDS = frozenset(
    "a an the of and or with by in on at to for from as is are be it its this that these those into onto over "
    "under very very much more most some any no not his her their our your my he she they we you i me him them "
    "while who which what where when how than then there here".split()
)
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


def content_words(text: str) -> list[str]:
    """Lower-cased words of the user's prompt worth not repeating (no stop words, no numbers)."""
    return _content_words_of(plain_words(text))


def _content_words_of(plain: str) -> list[str]:
    words = []
    for w in _WORD.findall(plain.lower()):
        if len(w) >= 3 and w not in _STOPWORDS and not w.isdigit():
            words.append(w)
    return list(dict.fromkeys(words))


_AND = re.compile(r"(\s+and\s+)", re.IGNORECASE)


def drop_repeated_items(modifier: str) -> str:
    """A modifier without its "and" items that only repeat earlier ones: "wearing sunglasses and a top hat and
    sunglasses" keeps "wearing sunglasses and a top hat", "by rembrandt and da vinci and rembrandt" its first two.
    An item with any new content word stays ("pencil drawing and ink drawing")."""
    parts = _AND.split(modifier)  # item, " and ", item, ...
    if len(parts) < 3:
        return modifier
    seen = set(_content_words_of(parts[0]))
    kept = [parts[0]]
    for joint, item in zip(parts[1::2], parts[2::2]):
        words = set(_content_words_of(item))
        if words and words <= seen:
            continue
        seen |= words
        kept += [joint, item]
    return "".join(kept)


def modifier_words(modifier: str) -> frozenset:
    """The words of a modifier of the addition but its stop words, which sanitize_added has already freed of
    syntax. Short words and numbers count here: "3d art" says more than "digital art"."""
    return frozenset(w for w in _WORD.findall(modifier.lower()) if w not in _STOPWORDS)


def repeats_an_earlier_modifier(words: frozenset, earlier: list[frozenset]) -> bool:
    """True when a modifier's modifier_words are all in one earlier modifier's (`earlier`: theirs): "wlop" after
    "by wlop", "mucha" after "alphonse mucha", "lighting" after "studio lighting". Words spread over several
    earlier modifiers ("red hair" after "red dress" and "long hair") say something new."""
    return bool(words) and any(words <= seen for seen in earlier)


_BREAK = re.compile(r"\bBREAK\b")


def last_chunk_text(text: str) -> str:
    """The part of a prompt after its last BREAK, i.e. the CLIP chunk an expansion lands in."""
    return _BREAK.split(text)[-1]


@dataclass(frozen=True)
class ParsedPrompt:
    """The user's prompt, parsed once, with what every step of an expansion needs of it."""
    text: str  # verbatim: it is never rewritten
    plain: str  # plain_words(text): the model's context
    content_words: tuple[str, ...]  # words the addition must not repeat
    segments: frozenset[str]  # its lower-cased modifiers (split_modifiers): the addition must not repeat them
    last_chunk_plain: str  # the plain words after the last BREAK: what the CLIP budget counts


def parse_prompt(text: str) -> ParsedPrompt:
    plain = plain_words(text)
    # Without a BREAK the last chunk is the whole prompt: its plain words are already known.
    last = plain_words(last_chunk_text(text)) if _BREAK.search(text) else plain
    return ParsedPrompt(text=text, plain=plain, content_words=tuple(_content_words_of(plain)),
                        segments=frozenset(seg.lower() for seg in split_modifiers(plain)), last_chunk_plain=last)


_NOT_ALNUM = re.compile(r"[\W_]+")
_ENDINGS = ("ing", "ed", "s")


def modifier_key(segment: str) -> str:
    """What makes two modifiers the same one: case, spacing, hyphens and one ending aside ('volumetric
    lighting' = 'volumetric light', 'hyper-realistic' = 'hyperrealistic', 'high details' = 'high detail')."""
    key = _NOT_ALNUM.sub("", segment.lower())
    for ending in _ENDINGS:
        if key.endswith(ending) and len(key) > len(ending) + 3:
            return key[: -len(ending)]
    return key
