"""CLIP-token budgets: chunk filling, the minimum room rule, and never overrunning."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from prompt_expander.expansion.budget import CHUNK, MIN_ROOM, approx_clip_tokens, clip_budget, count_adds_up_at


def test_approx_counts_words_digits_and_punctuation():
    assert approx_clip_tokens("woman portrait") == 2
    assert approx_clip_tokens("8k, highly detailed") == 5  # 8, k, ",", highly, detailed
    assert approx_clip_tokens("rutkowskiiiiiii") == 3  # long rare words count several tokens
    assert approx_clip_tokens("") == 0


def test_budget_fills_the_current_chunk():
    assert clip_budget("woman portrait") == CHUNK - 2
    assert clip_budget("x " * 40) == CHUNK - 40


def test_budget_moves_to_next_chunk_when_room_is_short():
    assert clip_budget("x " * 60) == CHUNK - 60 + CHUNK  # only 15 left: take the next chunk too
    assert clip_budget("x " * 75) == CHUNK  # exactly full: a whole new chunk
    assert clip_budget("x " * (CHUNK - MIN_ROOM)) == MIN_ROOM


def test_budget_counts_only_after_the_last_break():
    assert clip_budget("x " * 70 + " BREAK cat") == CHUNK - 1


def test_requested_budget_and_host_counter():
    assert clip_budget("anything", 30) == 30
    assert clip_budget("a b c", count=lambda s: 10 * len(s.split())) == CHUNK - 30


@pytest.mark.parametrize("budget", [3, 8, 20, 0])
def test_expansion_never_exceeds_budget(expander, budget):
    for seed in range(12):
        r = expander.expand("portrait of a woman", seed=seed, budget=budget)
        assert approx_clip_tokens(", " + r.added) <= r.clip_budget
        assert r.clip_tokens <= r.clip_budget


def test_host_counter_is_used_for_the_budget(expander):
    calls = []

    def count(text):
        calls.append(text)
        return 3 * len(text.split())

    r = expander.expand("a castle", seed=1, count=count)
    assert calls and r.clip_budget == CHUNK - 6
    assert count(", " + r.added) <= r.clip_budget


PROMPT_BYTES = st.binary(max_size=40) | st.text(alphabet="ab's1_,. -!é\u2019", max_size=30).map(str.encode)


@given(PROMPT_BYTES, PROMPT_BYTES)
def test_the_count_adds_up_where_it_says_so(left, right):
    """RowDecoder counts only the bytes a row gained since its last count when count_adds_up_at allows:
    half characters, apostrophes and punctuation runs on either side of the join included."""
    def count(data):
        return approx_clip_tokens(data.decode("utf-8", "ignore"))
    if right and count_adds_up_at(right[0]):
        assert count(left + right) == count(left) + count(right)


def test_joins_that_do_not_add_up_are_refused():
    assert approx_clip_tokens("foo" + "bar") != approx_clip_tokens("foo") + approx_clip_tokens("bar")
    assert approx_clip_tokens("," + "'st") != approx_clip_tokens(",") + approx_clip_tokens("'st")
    assert not any(count_adds_up_at(ord(c)) for c in "b7'") and not count_adds_up_at("é".encode()[0])
    assert all(count_adds_up_at(ord(c)) for c in " ,.-(_")
