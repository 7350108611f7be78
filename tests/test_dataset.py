"""Packed batches over many epochs: always full, never re-packed per step, identical on every run; caches
are reused only for the data they were built from."""
import numpy as np
import pytest

import tiny
from prompt_expander.train import dataset
from prompt_expander.train.dataset import PackedBatches, TokenizedPrompts, tokenize_file


def prompts(lengths):
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.concatenate([np.r_[1, np.full(n - 1, 5 + i % 50)] for i, n in enumerate(lengths)]).astype(np.int32)
    return TokenizedPrompts(tokens, offsets)


def ragged(n=2000, seed=0):
    """Lengths that pack into a different number of rows in each shuffled epoch."""
    return prompts(np.random.default_rng(seed).integers(3, 40, n))


def test_every_batch_is_full_for_many_epochs():
    batches = PackedBatches(ragged(), row_len=64, batch_size=8, seed=3, pad_id=0, bos_id=1)
    counts = [batches.epoch_start(e + 1) - batches.epoch_start(e) for e in range(6)]
    assert len(set(counts)) > 1  # the case that used to give a short, then an empty, batch
    steps = int(batches.epoch_start(6) // 8)
    for step in range(steps):
        ids, labels = batches.batch(step)
        assert ids.shape == (8, 64) and (labels != -100).any(axis=1).all(), step


def test_each_epoch_uses_every_prompt_once_and_batches_straddle_the_boundary():
    data = ragged(500)
    batches = PackedBatches(data, row_len=64, batch_size=8, seed=1, pad_id=0, bos_id=1)
    stream = [members for step in range(int(batches.epoch_start(3) // 8) + 1)
              for members in _rows_of(batches, step)]
    for e in range(3):
        epoch = stream[batches.epoch_start(e):batches.epoch_start(e + 1)]
        assert sorted(np.concatenate(epoch).tolist()) == list(range(len(data)))


def _rows_of(batches, step):
    seen = []
    original = batches.collate
    batches.collate = lambda rows: seen.extend(rows)
    try:
        batches.batch(step)
    finally:
        batches.collate = original
    return seen


def test_no_repacking_per_step(monkeypatch):
    calls = []
    real = dataset.pack_rows
    monkeypatch.setattr(dataset, "pack_rows", lambda *a: calls.append(1) or real(*a))
    batches = PackedBatches(ragged(), row_len=64, batch_size=8, seed=0, pad_id=0, bos_id=1)
    steps = int(PackedBatches(ragged(), row_len=64, batch_size=8, seed=0, pad_id=0, bos_id=1).epoch_start(4) // 8)
    calls.clear()
    for step in range(steps):
        batches.batch(step)
    assert len(calls) <= 5  # each of the 4 epochs once, and the 5th that the last batch may reach into


def test_a_step_gives_the_same_rows_whatever_came_before():
    a = PackedBatches(ragged(), row_len=64, batch_size=8, seed=2, pad_id=0, bos_id=1)
    b = PackedBatches(ragged(), row_len=64, batch_size=8, seed=2, pad_id=0, bos_id=1)
    late = int(a.epoch_start(3) // 8) - 1  # a batch that straddles the boundary into epoch 3
    for step in range(late + 2):
        a.batch(step)
    for step in (late, late + 1):  # a resumed run starts cold, straight at the step
        fresh = PackedBatches(ragged(), row_len=64, batch_size=8, seed=2, pad_id=0, bos_id=1)
        assert np.array_equal(a.batch(step)[0], fresh.batch(step)[0])
    assert np.array_equal(a.batch(5)[0], b.batch(5)[0])


def test_epochs_seen_counts_passes_over_the_corpus():
    batches = PackedBatches(ragged(), row_len=64, batch_size=8, seed=0, pad_id=0, bos_id=1)
    assert batches.epochs_seen(0) == 0
    assert batches.epochs_seen(int(batches.epoch_start(3) // 8)) == pytest.approx(3, abs=0.02)


def test_a_corpus_smaller_than_one_batch_still_gives_full_batches():
    batches = PackedBatches(prompts([10, 12, 9]), row_len=16, batch_size=8, seed=0, pad_id=0, bos_id=1)
    assert batches.batch(0)[0].shape == (8, 16)


def test_an_empty_corpus_is_a_clear_error():
    from prompt_expander.errors import DataError
    with pytest.raises(DataError, match="empty"):
        PackedBatches(TokenizedPrompts(np.zeros(0, np.int32), np.zeros(1, np.int64)),
                      row_len=16, batch_size=8, seed=0, pad_id=0, bos_id=1)


def test_token_cache_is_reused_only_for_the_same_file_and_tokenizer(tmp_path, capsys):
    from transformers import GPT2TokenizerFast
    tiny.make_tokenizer_files(tmp_path / "tok", tiny.corpus(300))
    tok = GPT2TokenizerFast.from_pretrained(str(tmp_path / "tok"))
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("a castle on a hill, 8k\n")
    second.write_text("a red fox in the snow, bokeh\nportrait of a woman\n")
    cache = tmp_path / "cache.npz"
    a = tokenize_file(first, tok, True, 1, 0, 64, cache)
    assert len(tokenize_file(first, tok, True, 1, 0, 64, cache)) == len(a) == 1
    assert "note:" not in capsys.readouterr().out  # reused silently
    b = tokenize_file(second, tok, True, 1, 0, 64, cache)
    assert len(b) == 2 and "built from other data" in capsys.readouterr().out
    assert len(tokenize_file(second, tok, True, 1, 0, 32, cache)) == 2  # other settings: rebuilt too
    assert "built from other data" in capsys.readouterr().out
