"""Mending a source whose digits and hyphens were split off by a detokeniser."""
from prompt_expander.splits import HyphenCompounds, looks_split, mend_split_text, tidy_splits

ORDINARY = ["a close-up of a fox, award-winning photo, kim jong-un, hyper-realistic",
            "close-up portrait, award-winning, hyper-realistic, a cat - digital art"] * 3


def compounds():
    c = HyphenCompounds()
    for line in ORDINARY:
        c.add(line)
    return c


def test_numbers_units_and_known_compounds_are_joined():
    assert mend_split_text("still of the 1 9 7 8 film, 8 k, 3 5 mm, f 1. 4, award - winning", compounds()) == \
        "still of the 1978 film, 8k, 35mm, f 1.4, award-winning"
    assert mend_split_text("the kim jong - un dolls, close - up", compounds()) == "the kim jong-un dolls, close-up"


def test_an_unknown_spaced_hyphen_may_be_a_separator_and_stays():
    assert mend_split_text("a seacrawler - part of a series", compounds()) == "a seacrawler - part of a series"


def test_trailing_bot_flags_are_dropped_only_with_a_number():
    assert mend_split_text("a temple, cgsociety - w 1 0 2 4 - n 8 - i", compounds()) == "a temple, cgsociety"
    assert mend_split_text("portrait, f 1. 4 - h 860") == "portrait, f 1.4"
    assert mend_split_text("a cat - n") == "a cat - n"


def test_a_split_prompt_is_told_from_an_ordinary_one():
    assert looks_split("close - up of a cat, award - winning, 8 k")
    assert looks_split("still of the 1 9 7 8 film")
    assert not looks_split("a close-up of a fox, award-winning photo, a cat - digital art")
    assert not looks_split("a cat on a mat, 8k, highly detailed")


def test_a_phrase_that_ends_on_a_number_is_not_a_split_decimal():
    assert tidy_splits("f 1. 4, iso 1. 2 5") == "f 1.4, iso 1.25"
    assert tidy_splits("unreal engine 5. 24mm film") == "unreal engine 5. 24mm film"
    assert tidy_splits("unreal engine 5. 2 4 mm film") == "unreal engine 5. 24mm film"
