"""The subject of a prompt, and the topic-tagged text a model can be trained on: subject, topic token, prompt."""
from __future__ import annotations

import re

TOPIC_TOKEN = "<|topic|>"
MAX_TOPIC_WORDS = 6  # people type a concept of a few words; a longer first phrase is cut to its start
# "a photo of", "highly detailed oil painting of", "close up portrait of": framing, not the subject
_FRAMING = re.compile(
    r"^(?:(?:a|an|the)\s+)?(?:[\w\-]+\s+){0,3}?(?:photo(?:graph)?|portrait|painting|picture|image|illustration"
    r"|render(?:ing)?|drawing|sketch|artwork|art|still|poster|close[- ]?up|shot)s?\s+of\s+", re.IGNORECASE)


def topic_of(text: str) -> str:
    """The prompt's subject: its first comma phrase without framing words, at most MAX_TOPIC_WORDS words."""
    first = text.split(",", 1)[0].strip()
    framing = _FRAMING.match(first)
    if framing and first[framing.end():].strip():
        first = first[framing.end():]
    return " ".join(first.split()[:MAX_TOPIC_WORDS])


def tagged(prompt: str) -> str:
    """A training prompt in the topic-tagged format, as an AAAI student abstract proposes ("explicitly tagging
    a main topic"): the model learns to write a prompt for an explicitly given subject."""
    return f"{topic_of(prompt)}{TOPIC_TOKEN}{prompt}"
