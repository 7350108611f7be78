"""The shipped word lists and whole-word matching over them."""
from prompt_expander.wordlists import WordMatcher, nsfw_words, parse_words


def test_safe_mode_words_take_profanity_but_not_words_that_only_look_like_it():
    safe = WordMatcher(nsfw_words())
    for added in ("crystals, weeds, stupid fuck, raptors", "a pile of shit", "Fucking awesome", "nude"):
        assert safe.search(added), added
    for added in ("bastard sword, damn good, shiitake, scunthorpe", "cocktail dress, dickens"):
        assert not safe.search(added), added


def test_parse_words_takes_lines_commas_and_comments():
    assert parse_words("a, b  c\n# all comment\nd # e, f\nA") == ["a", "b c", "d"]
