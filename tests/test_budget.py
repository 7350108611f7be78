"""CLIP-token budgets: chunk filling, the minimum room rule, and never overrunning."""
import pytest

from prompt_expander.budget import CHUNK, MIN_ROOM, approx_clip_tokens, clip_budget


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
