"""Caps that keep a host's memory bounded whatever it is handed; the CLI, the nodes and the script share them."""
from .errors import InputError

MAX_VARIATIONS = 256  # variations in one call: 10,000 took 7 GB
MAX_TEXT_CHARS = 100_000  # characters of a prompt: 10M took 2.4 GB; the model reads only its end anyway
MAX_ADAPTER_WEIGHT = 10.0  # |weight| of one style; past this a LoRA gives noise, not a style
MAX_CONTRAST = 2.0  # lambda of contrastive decoding; past this the contrast outweighs the model's own likelihood


def check_text(text, what: str = "text") -> str:
    """A prompt the expander can take: a string, valid Unicode, of at most MAX_TEXT_CHARS characters."""
    if not isinstance(text, str):
        raise InputError(f"{what} must be a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(f"{what} is {len(text):,} characters; the most is {MAX_TEXT_CHARS:,}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate: bytes that were not UTF-8 (a shell argument, say)
        raise InputError(f"{what} is not valid UTF-8 (a bad byte at character {e.start + 1})") from None
    return text
MAX_CANDIDATES = 16  # additions sampled per expansion for the on-topic pick; each is a decoded row
MAX_PICK_WORDS = 40  # words of each candidate the pick can look at before one is decoded on (pick_words)
MAX_CONTRAST_WORDS = 75  # words of an addition contrast can be limited to (contrast_words); 0 is all of them
MAX_ROWS = 256  # rows one decode computes (variations x candidates); more go in several decodes
# A host widget's value for "the model's own setting" (the core's None): a widget cannot hold None, and a graph
# saved before the widget existed loads with this default and keeps its text.
MODELS_OWN = -1


def or_models_own(value):
    """A host widget's value as the core takes it: None for MODELS_OWN."""
    return None if value == MODELS_OWN else value
