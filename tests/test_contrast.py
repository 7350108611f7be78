"""Concept-contrastive decoding: log p(x | input) - lambda * log p(x | no input), seeded per row as always."""
import math

import pytest
import torch

from prompt_expander.errors import InputError
from prompt_expander.expansion.sampling import CONTRAST_PLAUSIBILITY, contrastive_scores


def test_generic_tokens_lose_to_tokens_the_input_makes_likelier():
    # token 0 is likely with or without the input (filler); token 1 is likely only with it
    conditional = torch.log(torch.tensor([[0.5, 0.4, 0.1]]))
    unconditional = torch.log(torch.tensor([[0.8, 0.1, 0.1]]))
    scores = contrastive_scores(conditional, unconditional, 1.0)
    assert scores.argmax().item() == 1
    assert contrastive_scores(conditional, unconditional, 0.0).argmax().item() == 0


def test_only_plausible_tokens_are_ranked():
    conditional = torch.log(torch.tensor([[0.90, 0.095, 0.005]]))  # token 2 is far below the top
    unconditional = torch.log(torch.tensor([[0.90, 0.095, 0.005]])) - 20
    scores = contrastive_scores(conditional, unconditional.log_softmax(-1), 1.0)
    assert scores[0, 2] == -math.inf and scores[0, 1] > -math.inf
    assert 0.095 / 0.90 > CONTRAST_PLAUSIBILITY > 0.005 / 0.90


def test_a_row_with_every_token_banned_scores_minus_infinity_and_leaves_the_others_alone():
    logits = torch.tensor([[-math.inf, -math.inf, -math.inf], [2.0, 1.0, -3.0]])
    unconditional = torch.zeros(2, 3)
    scores = contrastive_scores(logits, unconditional, 1.0)
    assert (scores[0] == -math.inf).all()
    assert torch.equal(scores[1], contrastive_scores(logits[1:], unconditional[1:], 1.0)[0])


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_fast_path_equals_the_reference_with_contrast(expander, temperature):
    fast = expander.expand_many("a red fox in the snow", 3, seed=5, temperature=temperature, contrast=0.7)
    ref = expander.expand_many("a red fox in the snow", 3, seed=5, temperature=temperature, contrast=0.7,
                               fast=False)
    assert [r.text for r in fast] == [r.text for r in ref]


def test_contrast_is_seeded_changes_the_text_and_keeps_the_users_words(expander):
    text = "a castle on a hill"
    many = expander.expand_many(text, 4, seed=11, contrast=0.8)
    assert [r.text for r in many] == [expander.expand(text, seed=11 + i, contrast=0.8).text for i in range(4)]
    assert all(r.text.startswith(text + ", ") or r.text == text for r in many)
    plain = expander.expand_many(text, 4, seed=11)
    assert [r.text for r in many] != [r.text for r in plain]
    assert many[0].settings["contrast"] == 0.8  # stored with the result, so a shared workflow reproduces it


@pytest.mark.parametrize("bad", [-0.1, 2.5, float("nan"), True, "0.5"])
def test_a_bad_contrast_is_a_clear_error(expander, bad):
    with pytest.raises(InputError, match="contrast"):
        expander.expand("a castle", seed=0, contrast=bad)


def test_an_expansion_without_a_contrast_uses_the_models_own(tiny_model_dir, tmp_path):
    """The model card's `contrast` is the default; a caller's number wins, and results record the number used."""
    import json
    import shutil
    from prompt_expander.expansion import resident
    folder = tmp_path / "contrast-gpt2"
    shutil.copytree(tiny_model_dir, folder)
    meta = json.loads((folder / "prompt_expander.json").read_text())
    (folder / "prompt_expander.json").write_text(json.dumps({**meta, "contrast": 0.7}))
    exp = resident.load_expander(str(folder), resident=False)
    own = exp.expand("a red fox in the snow", seed=5)
    assert own.settings["contrast"] == 0.7
    assert own.text == exp.expand("a red fox in the snow", seed=5, contrast=0.7).text
    assert exp.expand("a red fox in the snow", seed=5, contrast=0).settings["contrast"] == 0
    plain = resident.load_expander(str(tiny_model_dir), resident=False)
    assert plain.expand("a red fox in the snow", seed=5).settings["contrast"] == 0.0


@pytest.mark.parametrize("bad", [-1, 3.0, "strong", True])
def test_a_bad_model_contrast_is_a_clear_error(tiny_model_dir, tmp_path, bad):
    import json
    import shutil
    from prompt_expander.errors import ModelLoadError
    from prompt_expander.expansion import resident
    folder = tmp_path / "bad-contrast"
    shutil.copytree(tiny_model_dir, folder)
    meta = json.loads((folder / "prompt_expander.json").read_text())
    (folder / "prompt_expander.json").write_text(json.dumps({**meta, "contrast": bad}))
    with pytest.raises(ModelLoadError, match="contrast"):
        resident.load_expander(str(folder), resident=False)


def test_plausibility_is_judged_against_the_best_token_the_row_may_write(expander):
    """When the conditional model's favourite is banned (the user's own word, say), contrast ranks the tokens
    within reach of the best allowed one; judged against the banned one, none passed and the row ended at once."""
    from prompt_expander.expansion.sampling import RowDecoder
    from prompt_expander.expansion.vocab import BanTable
    vocab = expander.vocab
    n = expander.model.config.vocab_size
    words = [t for t in range(n) if vocab.starts_word[t] and not vocab.forbidden[t] and t != vocab.eos_id][:3]
    favourite, second, third = words
    bans = BanTable()
    bans.add([favourite])
    conditional = torch.full((1, n), -30.0)
    conditional[0, favourite], conditional[0, second], conditional[0, third] = 0.0, -3.0, -3.5  # 5% and 3% of it
    unconditional = torch.zeros((1, n))
    rows = RowDecoder(vocab, bans, [0], temperature=0.8, top_k=50, top_p=0.95, budget=75, count=len,
                      separator=", ", min_new_tokens=0, max_new_tokens=8, contrast=1.0)
    chosen = rows.choose(conditional, unconditional).item()
    assert chosen in (second, third) and not rows.done[0]


def _decoded_rows(expander, text, seeds, **kw):
    """The rows' tokens as the fast decode leaves them, before any tidy-up."""
    from prompt_expander.expansion import syntax
    from prompt_expander.expansion.budget import approx_clip_tokens, clip_budget
    from prompt_expander.expansion.decoding import decode_fast
    settings = expander._settings(kw)
    prompt = syntax.parse_prompt(text)
    budget = clip_budget(prompt, settings.budget, approx_clip_tokens)
    rows = expander._row_decoder(prompt, seeds, settings, budget, approx_clip_tokens)
    decode_fast(expander.model, expander._context_ids(prompt.plain, rows.max_new_tokens), rows, None,
                expander._unconditional_ids())
    return rows


def test_contrast_words_keeps_the_first_words_and_lets_the_model_alone_choose_the_rest(expander):
    text, seeds = "a red fox in the snow", [3, 4, 5, 6]
    whole = _decoded_rows(expander, text, seeds, contrast=1.0)
    first = _decoded_rows(expander, text, seeds, contrast=1.0, contrast_words=2)
    plain = _decoded_rows(expander, text, seeds, contrast=0)
    starts = expander.vocab.starts_word
    for r in range(len(seeds)):
        # a token is chosen with contrast while fewer than 2 words precede it
        shared = next((j for j in range(len(first.tokens[r]) + 1)
                       if sum(starts[t] for t in first.tokens[r][:j]) >= 2), len(first.tokens[r]))
        assert first.tokens[r][:shared] == whole.tokens[r][:shared]
    assert first.tokens != whole.tokens and first.tokens != plain.tokens
    assert not first.wants_unconditional  # so the decode stopped computing the rows without the input


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_contrast_words_fast_path_equals_the_reference_and_a_variation_its_seed(expander, temperature):
    text = "a castle on a hill"
    kw = dict(temperature=temperature, contrast=0.8, contrast_words=2)
    many = expander.expand_many(text, 4, seed=11, **kw)
    assert [r.text for r in many] == [r.text for r in expander.expand_many(text, 4, seed=11, fast=False, **kw)]
    assert [r.text for r in many] == [expander.expand(text, seed=11 + i, **kw).text for i in range(4)]
    assert many[0].settings["contrast_words"] == 2


def test_contrast_words_past_the_addition_is_contrast_on_every_word(expander):
    text = "a castle on a hill"
    every = expander.expand_many(text, 3, seed=2, contrast=1.0)
    assert every[0].settings["contrast_words"] == 0
    assert [r.text for r in expander.expand_many(text, 3, seed=2, contrast=1.0, contrast_words=75)] == \
        [r.text for r in every]


def test_pick_words_with_contrast_words_picks_as_before_and_reproduces(expander):
    text = "a castle on a hill"
    kw = dict(contrast=1.0, candidates=4, pick_words=3, contrast_words=3)
    many = expander.expand_many(text, 3, seed=20, **kw)
    assert [r.text for r in many] == [expander.expand(text, seed=20 + i, **kw).text for i in range(3)]
    assert [r.text for r in many] == [r.text for r in expander.expand_many(text, 3, seed=20, fast=False, **kw)]


@pytest.mark.parametrize("bad", [-1, 76, 2.5, True, "3"])
def test_a_bad_contrast_words_is_a_clear_error(expander, bad):
    with pytest.raises(InputError, match="contrast_words"):
        expander.expand("a castle", seed=0, contrast=1.0, contrast_words=bad)


@pytest.mark.parametrize("value", [4, -2, "many"])
def test_the_models_own_contrast_words(tiny_model_dir, tmp_path, value):
    """The model card's `contrast_words` is the default, as its `contrast` is; a bad one fails at load."""
    import json
    import shutil
    from prompt_expander.errors import ModelLoadError
    from prompt_expander.expansion import resident
    folder = tmp_path / "contrast-words"
    shutil.copytree(tiny_model_dir, folder)
    meta = json.loads((folder / "prompt_expander.json").read_text())
    (folder / "prompt_expander.json").write_text(json.dumps({**meta, "contrast": 1.0, "contrast_words": value}))
    if not isinstance(value, int) or value < 0:
        with pytest.raises(ModelLoadError, match="contrast_words"):
            resident.load_expander(str(folder), resident=False)
        return
    exp = resident.load_expander(str(folder), resident=False)
    own = exp.expand("a red fox in the snow", seed=5)
    assert own.settings["contrast_words"] == value
    assert own.text == exp.expand("a red fox in the snow", seed=5, contrast_words=value).text
    assert exp.expand("a red fox in the snow", seed=5, contrast_words=0).settings["contrast_words"] == 0


def test_cache_positions_a_row_has_not_written_never_reach_its_text(expander, monkeypatch):
    # The contrast decode's caches come from torch.empty and are zeroed just ahead of the steps that read them
    # (decoding.ZeroedAhead): filled with NaN instead of whatever memory held, every text stays the reference's.
    real_empty = torch.empty

    def nan_empty(*size, **kw):
        out = real_empty(*size, **kw)
        return out.fill_(math.nan) if out.is_floating_point() else out

    text = "a castle on a hill"
    kw = dict(contrast=0.8, contrast_words=2)
    picked = dict(contrast=1.0, candidates=4, pick_words=3, contrast_words=3)
    reference = ([r.text for r in expander.expand_many(text, 4, seed=11, fast=False, **kw)],
                 [r.text for r in expander.expand_many(text, 3, seed=20, fast=False, **picked)])
    monkeypatch.setattr(torch, "empty", nan_empty)
    assert ([r.text for r in expander.expand_many(text, 4, seed=11, **kw)],
            [r.text for r in expander.expand_many(text, 3, seed=20, **picked)]) == reference


def test_the_unconditional_prefill_is_kept_until_the_weights_change(expander):
    text = "a red fox in the snow"
    first = expander.expand(text, seed=4, contrast=0.7).text
    fast = expander.model._prompt_expander_fast
    kept = fast._unconditional
    assert expander.expand(text, seed=4, contrast=0.7).text == first
    assert fast._unconditional is kept  # computed once for both calls
    c_fc = expander.model.transformer.h[0].mlp.c_fc
    saved = c_fc.weight.detach().clone()
    try:
        with torch.no_grad():
            c_fc.weight.mul_(1.5)  # in place: a new version, the same storage
        changed = expander.expand(text, seed=4, contrast=0.7).text
        assert fast._unconditional is not kept
        assert changed == expander.expand(text, seed=4, contrast=0.7, fast=False).text
        ids = expander._unconditional_ids()
        assert torch.equal(fast._unconditional[2], fast.prefill(torch.tensor([ids]), 1, len(ids)))
    finally:
        with torch.no_grad():
            c_fc.weight.copy_(saved)
        fast.kv = None


def test_offloading_drops_the_kept_unconditional_prefill(tiny_model_dir):
    # Kept on the model's device, it must not hold memory there once a host moves the model away.
    from prompt_expander.expansion.resident import load_expander
    from prompt_expander.host.hosting import offload_to_cpu
    exp = load_expander(str(tiny_model_dir), resident=False)
    text = exp.expand("a red fox in the snow", seed=4, contrast=0.7).text
    fast = exp.model._prompt_expander_fast
    assert fast._unconditional is not None
    offload_to_cpu(exp.model)
    assert fast._unconditional is None
    assert exp.expand("a red fox in the snow", seed=4, contrast=0.7).text == text
