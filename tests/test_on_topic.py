"""The on-topic pick: candidate seeds, the picker's choice, and candidates through the expander."""
import pytest
import torch

from prompt_expander.errors import InputError
from prompt_expander.expansion import expander as expander_module
from prompt_expander.expansion.on_topic import OnTopicPicker, candidate_seeds
from prompt_expander.expansion.sampling import SEED_SPACE


def test_candidate_zero_is_the_seed_and_no_candidate_is_another_variations_seed():
    assert candidate_seeds(5, 1) == [5]
    rows = [c for s in range(100) for c in candidate_seeds(s, 16)]
    assert len(set(rows)) == len(rows)
    assert all(0 <= c < SEED_SPACE for c in candidate_seeds(SEED_SPACE - 1, 16))


class WordTokenizer:
    """One token per word, from a fixed list: enough to steer the picker by hand-made embeddings."""

    def __init__(self, words):
        self.ids = {w: i for i, w in enumerate(words)}

    def encode(self, text, add_special_tokens=False):
        return [self.ids[w] for w in text.replace(",", " ").split() if w in self.ids]


def picker():
    words = ["lemon", "citrus", "castle", "tower", "art", "x"]
    embeddings = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.1, 0.9, 0.0],
                               [0.0, 0.0, 1.0], [0.3, 0.3, 0.3]])
    return OnTopicPicker(WordTokenizer(words), embeddings, min_words=0)


def test_the_picker_keeps_the_candidate_whose_words_are_closest_to_the_input():
    p = picker()
    assert p.pick("lemon", ["castle, tower", "citrus, art", "art"]) == 1
    assert p.pick("castle", ["castle, tower", "citrus, art", "art"]) == 0


def test_the_picker_skips_candidates_it_cannot_score_and_keeps_the_first_among_equals():
    p = picker()
    assert p.pick("lemon", ["", "unknown words", "art"]) == 2
    assert p.pick("lemon", ["", "unknown words"]) == 0
    assert p.pick("unknown", ["art", "citrus"]) == 0  # nothing to compare with: the plain expansion
    assert p.pick("lemon", ["art", "citrus", "citrus"]) == 1


def test_a_short_candidate_is_kept_only_when_every_candidate_is_short():
    p = OnTopicPicker(picker().tokenizer, picker().weights, min_words=3)
    assert p.pick("lemon", ["citrus", "castle tower art", "citrus citrus art"]) == 2
    assert p.pick("lemon", ["castle tower art", "citrus"]) == 0
    assert p.pick("lemon", ["castle tower", "citrus"]) == 1  # all short: the closest


def test_the_kept_addition_is_the_picked_one_of_the_plain_expansions_of_its_candidate_seeds(expander):
    text, seed, k = "a red fox in the snow", 7, 4
    plain = [expander.expand(text, seed=s).added for s in candidate_seeds(seed, k)]
    kept = expander.expand(text, seed=seed, candidates=k)
    chooser = OnTopicPicker(expander.tokenizer, expander.model.get_input_embeddings().weight)
    assert kept.added == plain[chooser.pick("a red fox in the snow", plain)]
    assert kept.seed == seed and kept.settings["candidates"] == k  # stored, so a shared workflow reproduces it
    assert kept.text.startswith(text + ", ")
    assert expander.expand(text, seed=seed, candidates=1).text == expander.expand(text, seed=seed).text


def test_variation_i_with_candidates_is_seed_plus_i_alone_in_one_decode_or_several(expander, monkeypatch):
    text = "a castle on a hill"
    alone = [expander.expand(text, seed=20 + i, candidates=3, contrast=0.5).text for i in range(5)]
    assert [r.text for r in expander.expand_many(text, 5, seed=20, candidates=3, contrast=0.5)] == alone
    monkeypatch.setattr(expander_module, "MAX_ROWS", 7)  # 2 variations x 3 candidates per decode
    assert [r.text for r in expander.expand_many(text, 5, seed=20, candidates=3, contrast=0.5)] == alone


def test_progress_runs_once_over_every_part_of_a_split_call(expander, monkeypatch):
    monkeypatch.setattr(expander_module, "MAX_ROWS", 7)  # 5 variations x 3 candidates: 3 decodes
    calls = []
    expander.expand_many("a castle on a hill", 5, seed=20, candidates=3, on_progress=lambda d, t: calls.append((d, t)))
    done, totals = [d for d, _ in calls], {t for _, t in calls}
    assert len(totals) == 1 and done == sorted(done) and 0 < done[-1] <= totals.pop()
    assert done[-1] > 2 * (calls[0][1] // 3)  # the last part's steps come after the first two parts'


def test_the_reference_decode_keeps_the_same_candidate(expander):
    fast = expander.expand_many("a lighthouse at dusk", 2, seed=3, candidates=3)
    ref = expander.expand_many("a lighthouse at dusk", 2, seed=3, candidates=3, fast=False)
    assert [r.text for r in fast] == [r.text for r in ref]


@pytest.mark.parametrize("bad", [0, 17, -1, True, 2.0, "3", None])
def test_a_bad_candidate_count_is_a_clear_error(expander, bad):
    with pytest.raises(InputError, match="candidates"):
        expander.expand("a castle", seed=0, candidates=bad)
