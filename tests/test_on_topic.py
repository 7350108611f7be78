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


@pytest.mark.parametrize("bad", [0, 17, -1, True, 2.0, "3"])
def test_a_bad_candidate_count_is_a_clear_error(expander, bad):
    with pytest.raises(InputError, match="candidates"):
        expander.expand("a castle", seed=0, candidates=bad)


def _paused_rows(expander, text, seed, k, words):
    """k candidate rows of `text` decoded to `words` words each, as the pick by first words decodes them."""
    from prompt_expander.expansion.budget import approx_clip_tokens, clip_budget
    from prompt_expander.expansion.decoding import decode_fast
    prompt = expander._parsed(text, "p")
    settings = expander._settings({})
    budget = clip_budget(prompt, settings.budget, approx_clip_tokens)
    rows = expander._row_decoder(prompt, candidate_seeds(seed, k), settings, budget, approx_clip_tokens,
                                 pause_at_words=words)
    decode_fast(expander.model, expander._context_ids(prompt.plain, rows.max_new_tokens), rows, None,
                expander._unconditional_ids())
    fresh = expander._row_decoder(prompt, [0], settings, budget, approx_clip_tokens)
    return rows, fresh


def test_a_paused_row_replays_into_a_one_row_decoder_with_every_rule_and_draw_as_it_was(expander):
    rows, fresh = _paused_rows(expander, "a red fox in the snow", 7, 4, 3)
    paused = [r for r in range(rows.n) if rows.paused[r]]
    assert paused and all(rows.words[r] == 3 and rows.done[r] for r in paused)
    r = paused[-1]
    fresh.replay(rows, r)
    assert not fresh.done[0] and fresh.steps == len(rows.tokens[r]) and fresh.words[0] == 3
    for name in ("tokens", "row_bytes", "trigrams", "word_pairs", "segment"):
        assert getattr(fresh, name)[0] == getattr(rows, name)[r], name
    # The pausing token's budget check is not replayed (that token was never written): the clean stop is the
    # one before it, as in any decode before its next word.
    assert fresh.clean_len[0] <= rows.clean_len[r] and fresh._fits(0)
    assert fresh.segment_bans[0].by_prefix == rows.segment_bans[r].by_prefix
    assert torch.equal(fresh.generators[0].get_state(), rows.generators[r].get_state())
    with pytest.raises(ValueError):
        fresh.replay(rows, r)  # only into a fresh decoder


def test_picking_by_first_words_reproduces_per_seed_in_any_batch_and_either_decode(expander):
    text = "a castle on a hill"
    alone = [expander.expand(text, seed=20 + i, candidates=4, pick_words=3) for i in range(3)]
    assert all(r.settings["pick_words"] == 3 and r.text.startswith(text + ", ") for r in alone)
    many = expander.expand_many(text, 3, seed=20, candidates=4, pick_words=3)
    assert [r.text for r in many] == [r.text for r in alone]
    reference = expander.expand_many(text, 3, seed=20, candidates=4, pick_words=3, fast=False)
    assert [r.text for r in reference] == [r.text for r in alone]  # the continuation's positions, both paths
    assert all(r.clip_tokens <= r.clip_budget for r in alone)
    plain = expander.expand(text, seed=20).text
    assert expander.expand(text, seed=20, pick_words=3).text == plain  # one candidate: nothing to pick


def test_beginnings_of_many_seeds_decode_in_batches_of_max_rows_and_each_keeps_its_seeds_text(expander, monkeypatch):
    from prompt_expander.expansion import expander as expander_module
    text = "a castle on a hill"
    alone = [expander.expand(text, seed=30 + i, candidates=3, pick_words=3).text for i in range(5)]
    decodes = []
    real = expander._run_decode
    monkeypatch.setattr(expander, "_run_decode",
                        lambda context, rows, *a, **kw: (decodes.append(rows.n), real(context, rows, *a, **kw)))
    monkeypatch.setattr(expander_module, "MAX_ROWS", 7)  # 2 seeds' beginnings (6 rows) a decode: 3 decodes
    assert [r.text for r in expander.expand_many(text, 5, seed=30, candidates=3, pick_words=3)] == alone
    assert [n for n in decodes if n > 1] == [6, 6, 3]


def test_picking_by_more_words_than_any_row_writes_keeps_a_whole_candidate(expander):
    text, seed, k = "a red fox in the snow", 7, 4
    plain = [expander.expand(text, seed=s).added for s in candidate_seeds(seed, k)]
    assert expander.expand(text, seed=seed, candidates=k, pick_words=40).added in plain


def test_progress_of_a_pick_by_first_words_counts_the_variations(expander):
    calls = []
    expander.expand_many("a castle", 3, seed=1, candidates=2, pick_words=2, on_progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize("bad", [-1, 41, True, 2.5, "3"])
def test_a_bad_pick_words_is_a_clear_error(expander, bad):
    with pytest.raises(InputError, match="pick_words"):
        expander.expand("a castle", seed=0, candidates=2, pick_words=bad)


def test_subjects_decoded_together_refuse_a_pick_by_first_words_they_would_not_make(expander):
    with pytest.raises(InputError, match="pick_words"):
        expander.expand_subjects(["a castle", "a fox"], candidates=2, pick_words=3)
    assert len(expander.expand_subjects(["a castle", "a fox"], pick_words=3)) == 2  # one candidate: no pick


@pytest.mark.parametrize("card", [{"candidates": 3, "pick_words": 2}, {"candidates": 0}, {"pick_words": "16"}])
def test_the_models_own_pick(tiny_model_dir, tmp_path, card):
    """The model card's `candidates` and `pick_words` are the defaults, as its contrast is; a bad one fails at load."""
    import json
    import shutil
    from prompt_expander.errors import ModelLoadError
    from prompt_expander.expansion import resident
    folder = tmp_path / "own-pick"
    shutil.copytree(tiny_model_dir, folder)
    meta = json.loads((folder / "prompt_expander.json").read_text())
    (folder / "prompt_expander.json").write_text(json.dumps({**meta, **card}))
    if card != {"candidates": 3, "pick_words": 2}:
        with pytest.raises(ModelLoadError, match=next(iter(card))):
            resident.load_expander(str(folder), resident=False)
        return
    exp = resident.load_expander(str(folder), resident=False)
    own = exp.expand("a red fox in the snow", seed=5)
    assert (own.settings["candidates"], own.settings["pick_words"]) == (3, 2)
    assert own.text == exp.expand("a red fox in the snow", seed=5, candidates=3, pick_words=2).text
    plain = exp.expand("a red fox in the snow", seed=5, candidates=1)
    assert plain.settings["candidates"] == 1
    assert plain.text == resident.load_expander(str(tiny_model_dir), resident=False).expand(
        "a red fox in the snow", seed=5).text
    # Subjects decoded together pick by whole additions only: they take the card's candidates but not its pick
    # by first words unless told, and say so rather than write another pick than expand() would.
    with pytest.raises(InputError, match="pick_words"):
        exp.expand_subjects(["a castle", "a fox"])
    assert len(exp.expand_subjects(["a castle", "a fox"], pick_words=0)) == 2
