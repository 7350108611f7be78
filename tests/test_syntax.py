"""The syntax guard: plain words for the model, verbatim user text, no broken syntax in the output."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prompt_expander.expansion.syntax import (SYNTAX_CHARS, content_words, drop_repeated_items, join_expansion,
                                             modifier_words, plain_words, repeats_an_earlier_modifier,
                                             sanitize_added, strip_trailing)

CASES = {
    "(woman:1.2) portrait": "woman portrait",
    "((masterpiece)), [blurry]": "masterpiece, blurry",
    r"a \(cat\) in a hat": "a cat in a hat",
    "[dog:cat:0.5] on a sofa": "cat on a sofa",
    "[dog::0.5] alone": "dog alone",
    "[red|blue] car": "red car",
    "<lora:add_detail:0.7> castle <lyco:foo:1> <hypernet:bar:0.5>": "castle",
    "embedding:easynegative photo of a man": "photo of a man",
    "(embedding:foo:1.2) smile": "smile",
    "a cat BREAK a dog": "a cat, a dog",
    "__animals/cute__ in a {red|blue|2$$green} field": "animals cute in a red field",
    "{2$$a|b|c} thing": "a thing",
    "line one\nline two": "line one, line two",
    "<lora:x:1>": "",
    "((unbalanced": "unbalanced",
    "a ]weird[ }thing{": "a weird thing",
    "[[nested:thing:0.2]:other:0.8]": "other",
    "cat AND dog": "cat, dog",
    "emoji 🐱 and עברית": "emoji 🐱 and עברית",
    "ctrl\x00\x07chars": "ctrl chars",
}


@pytest.mark.parametrize("text,plain", CASES.items())
def test_plain_words(text, plain):
    assert plain_words(text) == plain
    assert not set(plain_words(text)) & SYNTAX_CHARS


def test_join_keeps_user_text_and_adds_a_segment():
    assert join_expansion("a cat,  \n", "x, y") == "a cat, x, y"
    assert join_expansion("(a:1.2)", "x") == "(a:1.2), x"
    assert join_expansion("foo\\", "x") == "foo\\ , x"  # a trailing backslash never escapes our comma
    assert join_expansion("foo\\\\", "x") == "foo\\\\, x"
    assert join_expansion("a cat", "") == "a cat"
    assert strip_trailing("a, b ,  ") == "a, b"


def test_sanitize_removes_syntax():
    assert sanitize_added("a (b:1.2), [c] <lora:x> BREAK d__e") == "a b 1.2, c lora x, d e"


def test_content_words_skip_stopwords_and_syntax():
    assert content_words("a (Portrait:1.3) of the Woman <lora:x:1>") == ["portrait", "woman"]


WORDS = st.sampled_from(["cat", "woman", "portrait", "BREAK", "AND", "embedding:x", "__wild__", "<lora:a:0.5>",
                         "(x:1.2)", "[a:b:0.3]", "[a|b]", "{a|b}", "\\(", "\\)", "((", "))", "[", "]", "{", "}",
                         "<", ">", "|", ":", "\\", ",", "\n", "  ", "🐱", "שלום", "é"])
TEXTS = st.lists(WORDS, min_size=1, max_size=12).map(" ".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS, seed=st.integers(min_value=-2**70, max_value=2**70))
def test_expansion_keeps_text_verbatim_and_adds_no_syntax(expander, text, seed):
    if not text.strip():
        return
    r = expander.expand(text, seed=seed, budget=12)
    base = strip_trailing(text)
    assert r.text.startswith(base)
    assert r.text == join_expansion(text, r.added)
    assert not set(r.added) & SYNTAX_CHARS
    assert "BREAK" not in r.added.split() and "AND" not in r.added.split()


def test_the_users_text_is_parsed_once_per_expansion(expander, monkeypatch):
    from prompt_expander.expansion import syntax
    calls = []
    real = syntax.plain_words
    monkeypatch.setattr(syntax, "plain_words", lambda t: calls.append(t) or real(t))
    expander.expand_many("(a castle:1.2) on a hill, [oil|ink] painting", 3, seed=1)
    assert calls == ["(a castle:1.2) on a hill, [oil|ink] painting"]
    calls.clear()
    expander.expand("a castle BREAK a moat", seed=1)  # the chunk after BREAK is what the budget counts
    assert calls == ["a castle BREAK a moat", " a moat"]


def test_parsed_prompt_carries_what_the_expansion_needs():
    from prompt_expander.expansion.syntax import parse_prompt
    p = parse_prompt("(Red Fox:1.3), snowy forest <lora:x:1> BREAK dusk")
    assert p.plain == "Red Fox, snowy forest, dusk" and p.last_chunk_plain == "dusk"
    assert p.content_words == ("red", "fox", "snowy", "forest", "dusk")
    assert p.segments == {"red fox", "snowy forest", "dusk"}


def test_modifiers_that_differ_only_in_spacing_hyphens_or_an_ending_are_the_same():
    from prompt_expander.expansion.syntax import modifier_key
    same = [("volumetric lighting", "Volumetric Light"), ("hyper-realistic", "hyperrealistic"),
            ("high details", "high detail"), ("octane rendered", "octane render"), ("8K", "8k")]
    for a, b in same:
        assert modifier_key(a) == modifier_key(b), (a, b)
    assert modifier_key("cat") != modifier_key("cats ears") and modifier_key("red") == "red"
    assert modifier_key("bus") == "bus" and modifier_key("arts") == "arts"  # short words keep their ending


@pytest.mark.parametrize("added, modifiers", [
    ("artstation hd. masterpiece, masterpiece. 8k.", ["artstation hd", "masterpiece", "masterpiece", "8k"]),
    ("award winning... cinematic lighting", ["award winning", "cinematic lighting"]),
    # initials, abbreviations and numbers keep their periods
    ("h.r. giger, j. c. leyendecker, f/1.8", ["h.r. giger", "j. c. leyendecker", "f/1.8"]),
    ("st. louis at night. art by dr. seuss", ["st. louis at night", "art by dr. seuss"]),
    ("unreal engine 5. 24mm film, version 1.5. ok", ["unreal engine 5", "24mm film", "version 1.5", "ok"]),
    ("  , sharp  focus ,", ["sharp focus"]),
])
def test_a_period_that_ends_a_phrase_splits_modifiers_as_a_comma_does(added, modifiers):
    from prompt_expander.expansion.syntax import split_modifiers
    assert split_modifiers(added) == modifiers


@pytest.mark.parametrize("modifier, kept", [
    ("wearing sunglasses and a top hat and sunglasses", "wearing sunglasses and a top hat"),
    ("futuristic and futuristic and mysterious atmosphere", "futuristic and mysterious atmosphere"),
    ("by bo bartlett and moebius and jean giraud and moebius", "by bo bartlett and moebius and jean giraud"),
    ("by giger and hr giger", "by giger"),  # "hr" is too short to count as a new word
    ("with a waterfall in the distance and a waterfall and forest", "with a waterfall in the distance and forest"),
    ("salt AND salt and pepper", "salt and pepper"),  # the joints kept are the ones written
    ("pencil drawing and ink drawing", "pencil drawing and ink drawing"),  # a new word: a new item
    ("black and white", "black and white"),
    ("cats and more", "cats and more"),  # an item of stop words only says nothing repeated
    ("sunglasses", "sunglasses"),
])
def test_drop_repeated_items(modifier, kept):
    assert drop_repeated_items(modifier) == kept


@pytest.mark.parametrize("modifier, repeats", [
    ("wlop", True), ("Alphonse Mucha", True), ("studio lighting", True), ("trending in artstation", True),
    ("3d art", False),  # "3d" is a word here, though too short to be one of the user's content words
    ("red hair", False),  # its words are in two earlier modifiers, not in one
    ("the", False),  # stop words only: nothing to repeat
])
def test_a_modifier_repeats_when_one_earlier_modifier_holds_all_its_words(modifier, repeats):
    earlier = [modifier_words(m) for m in ("by wlop", "art by alphonse mucha", "studio lighting",
                                           "trending on artstation", "digital art", "red dress", "long hair")]
    assert repeats_an_earlier_modifier(modifier_words(modifier), earlier) is repeats
