"""Draft tokens: the n-gram table, its file, the `draft-tokens` command, and decodes that check its guesses."""
import json
import shutil

import numpy as np
import pytest
import torch

import tiny
from prompt_expander import draft_tokens as dt
from prompt_expander.cli import main
from prompt_expander.draft_tokens import DRAFT_TOKENS_FILE, DraftTable, count_ngrams
from prompt_expander.errors import ModelLoadError
from prompt_expander.expansion import decoding
from prompt_expander.expansion.resident import load_expander

BOS, EOS = 1, 0
# four prompts of a 10-token vocabulary: 5 6 is followed by 7 twice and by 8 once; 9 6 by 8
PROMPTS = np.array([1, 5, 6, 7, 0, 1, 5, 6, 8, 0, 1, 5, 6, 7, 0, 1, 9, 6, 8, 0])


def test_ngrams_are_counted_inside_prompts_only():
    keys, counts = count_ngrams(PROMPTS, 1, 10, BOS, EOS)
    pairs = {(int(k) // 10, int(k) % 10): int(c) for k, c in zip(keys, counts)}
    # no pair runs from a prompt's EOS into the next one's BOS
    assert pairs == {(1, 5): 3, (1, 9): 1, (5, 6): 3, (6, 7): 2, (6, 8): 2, (7, 0): 2, (8, 0): 2, (9, 6): 1}


def test_counting_in_chunks_counts_the_same(monkeypatch):
    whole = count_ngrams(PROMPTS, 2, 10, BOS, EOS)
    monkeypatch.setattr(dt, "_CHUNK", 3)
    chunked = count_ngrams(PROMPTS, 2, 10, BOS, EOS)
    assert all(np.array_equal(a, b) for a, b in zip(whole, chunked))


def test_a_longer_context_is_kept_only_where_it_guesses_otherwise_than_the_shorter_one():
    table = DraftTable.build(PROMPTS, 10, BOS, EOS)
    assert table.contexts[1].tolist() == [1, 5, 6, 7, 8, 9] and table.nexts[1].tolist() == [5, 6, 7, 0, 0, 6]
    # (5, 6) -> 7 is what 6 -> 7 says already; (9, 6) -> 8 is not; no 3-token context adds anything
    assert table.contexts[2].tolist() == [9 * 10 + 6] and table.nexts[2].tolist() == [8]
    assert len(table.contexts[3]) == 0
    assert table.propose([1, 5], 4) == [6, 7, 0]  # stops after EOS: nothing follows it
    assert table.propose([1, 9], 2) == [6, 8]
    assert table.propose([3], 4) == []


def test_max_entries_keeps_the_contexts_that_add_most():
    prompts = np.array([1, 2, 3, 4, 0] * 5 + [1, 5, 3, 6, 0] * 3 + [1, 7, 3, 8, 0] * 2 + [1, 9, 3, 4, 0])
    table = DraftTable.build(prompts, 10, BOS, EOS, orders=(1, 2), max_entries=1)
    assert table.nexts[1][table.contexts[1].tolist().index(3)] == 4
    assert table.contexts[2].tolist() == [5 * 10 + 3]  # right 3 times where 3 -> 4 is wrong; 7 3 only twice


def test_a_table_survives_its_file_and_a_bad_file_is_a_clear_error(tmp_path):
    table = DraftTable.build(PROMPTS, 10, BOS, EOS)
    path = tmp_path / DRAFT_TOKENS_FILE
    table.save(path, prompts=4)
    loaded = DraftTable.load(path, vocab_size=10)
    assert loaded.propose([1, 9], 3) == table.propose([1, 9], 3) and len(loaded) == len(table)
    with pytest.raises(ModelLoadError, match="vocabulary of 10"):
        DraftTable.load(path, vocab_size=12)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ModelLoadError, match="cannot read draft tokens"):
        DraftTable.load(path)
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"), metadata={"format": "something else"})
    with pytest.raises(ModelLoadError, match="not a draft-tokens file"):
        DraftTable.load(tmp_path / "other.safetensors")


def test_a_vocabulary_too_large_for_the_keys_is_refused():
    with pytest.raises(ValueError, match="too large"):
        DraftTable.build(PROMPTS, 8192, BOS, EOS, orders=(1, 2, 3, 4))


@pytest.fixture(scope="module")
def drafted_model(tiny_model_dir, tmp_path_factory):
    """The tiny model with a draft table counted by the `draft-tokens` command from its own corpus."""
    folder = tmp_path_factory.mktemp("drafted") / "tiny-drafted"
    shutil.copytree(tiny_model_dir, folder)
    corpus = folder.parent / "train.txt"
    corpus.write_text("\n".join(tiny.corpus()) + "\n", encoding="utf-8")
    assert main(["draft-tokens", str(corpus), "--model", str(folder)]) == 0
    return folder


def test_the_command_writes_the_table_and_names_it_in_the_card(drafted_model):
    card = json.loads((drafted_model / "prompt_expander.json").read_text())
    assert card["draft_tokens"] == DRAFT_TOKENS_FILE and card["lowercase"] is True
    exp = load_expander(str(drafted_model))
    table = exp.draft_tokens()
    assert len(table) > 0 and table.vocab_size == exp.model.config.vocab_size
    comma = exp.tokenizer.encode(",")[0]
    assert table.propose(exp.tokenizer.encode("by greg"), 1) != []  # the corpus writes "by greg rutkowski"
    assert comma in table.nexts[1]


def test_the_command_refuses_a_missing_model_folder(tmp_path, capsys):
    (tmp_path / "p.txt").write_text("a cat\n")
    assert main(["draft-tokens", str(tmp_path / "p.txt"), "--model", str(tmp_path / "nope")]) == 1
    assert "no such folder" in capsys.readouterr().err


def _texts(exp, guess: bool, **kw):
    exp.guess_tokens = guess
    try:
        return [exp.expand(text, seed=seed, candidates=3, pick_words=3, **kw).text
                for text in ("a castle on a hill", "a red fox in the snow") for seed in (4, 11)]
    finally:
        exp.guess_tokens = True


def test_guessing_changes_no_text_and_takes_fewer_steps(drafted_model, monkeypatch):
    exp = load_expander(str(drafted_model))
    checks = []
    real = decoding.FastGPT2.check_rows
    monkeypatch.setattr(decoding.FastGPT2, "check_rows", lambda self, rows: (
        checks.extend(len(tokens) for _, tokens, _ in rows), real(self, rows))[1])
    guessed = _texts(exp, True)
    assert guessed == _texts(exp, False)
    assert checks and max(checks) > 1  # guesses were checked, several positions a step
    assert _texts(exp, True, contrast=1.0, contrast_words=2) == _texts(exp, False, contrast=1.0, contrast_words=2)


def test_a_table_that_always_guesses_wrong_changes_no_text(drafted_model, monkeypatch):
    exp = load_expander(str(drafted_model))
    want = _texts(exp, False)
    vocab = exp.model.config.vocab_size
    monkeypatch.setattr(DraftTable, "propose", lambda self, history, k: [(history[-1] + 1) % vocab] * k)
    assert _texts(exp, True) == want


def test_with_guessing_each_variation_is_its_seed_alone(drafted_model):
    exp = load_expander(str(drafted_model))
    kw = dict(candidates=3, pick_words=3, contrast=1.0, contrast_words=3)
    many = [r.text for r in exp.expand_many("a castle on a hill", 4, seed=9, **kw)]
    assert many == [exp.expand("a castle on a hill", seed=9 + i, **kw).text for i in range(4)]
    assert many == [r.text for r in exp.expand_many("a castle on a hill", 4, seed=9, fast=False, **kw)]


@pytest.mark.parametrize("kw", [dict(candidates=3, pick_words=3), dict(candidates=3, pick_words=3, contrast=1.0,
                                                                         contrast_words=3)])
def test_the_chosen_rows_go_on_together_each_as_its_seed_alone(drafted_model, tmp_path, monkeypatch, kw):
    if not decoding.fp16_weight_linear_available():
        pytest.skip("this torch build has no FBGEMM")
    folder = tmp_path / "fp16-valued"  # as the shipped model: saved in fp16, so its rows go to FBGEMM
    shutil.copytree(drafted_model, folder)
    exp = load_expander(str(folder))
    with torch.no_grad():
        for p in exp.model.parameters():
            p.copy_(p.half().float())
    decoding.weights_changed(exp.model)
    together = []
    real = decoding.FastGPT2.check_rows
    monkeypatch.setattr(decoding.FastGPT2, "check_rows", lambda self, rows: (together.append(len(rows)),
                                                                             real(self, rows))[1])
    many = [r.text for r in exp.expand_many("a castle on a hill", 5, seed=9, **kw)]
    assert max(together) > 1  # the rests went on in shared steps
    assert many == [exp.expand("a castle on a hill", seed=9 + i, **kw).text for i in range(5)]
    assert many == [r.text for r in exp.expand_many("a castle on a hill", 5, seed=9, fast=False, **kw)]


def test_a_picked_row_goes_on_from_its_own_cache_without_a_prefill(drafted_model, monkeypatch):
    exp = load_expander(str(drafted_model))
    want = _texts(exp, False)
    prefills = []
    real = decoding.FastGPT2.prefill
    monkeypatch.setattr(decoding.FastGPT2, "prefill", lambda self, context, *a: (prefills.append(context.shape[1]),
                                                                                  real(self, context, *a))[1])
    exp.guess_tokens = True
    text = exp.expand("a castle on a hill", seed=4, candidates=3, pick_words=3).text
    assert text == want[0] and len(prefills) == 1  # the beginnings' context only (no contrast here)
    assert _texts(exp, True) == want


def test_a_resumed_decode_needs_one_row_a_draft_and_no_contrast(drafted_model):
    exp = load_expander(str(drafted_model))
    prompt = exp._parsed("a cat", "p")
    rows = exp._row_decoder(prompt, [1, 2], exp._settings({}), 40, len)
    with pytest.raises(ValueError, match="one row"):
        decoding.decode_fast(exp.model, [1, 2], rows, draft=exp.draft_tokens(),
                             resume=decoding.PausedRow([], torch.zeros(1, 3)))
