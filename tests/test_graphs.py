"""CUDA-graph decoding: the static-cache step and its bookkeeping on CPU (an eager stand-in records the
"graph"), and the real capture where a GPU is present."""
import gc
import logging
import weakref

import pytest
import torch

from prompt_expander.expansion import decoding, graphs
from prompt_expander.expansion.decoding import FastGPT2, decode_fast, decode_reference
from prompt_expander.expansion.sampling import RowDecoder
from prompt_expander.expansion.vocab import BanTable
from prompt_expander.host.hosting import PromptExpanderModel

from test_decoding import tiny_gpt2

CONTEXT = [5, 17, 300, 44, 9]


class Vocab:
    """Just what RowDecoder reads, for a model whose token ids mean nothing."""

    def __init__(self, n):
        self.eos_id = 0
        self.forbidden = torch.zeros(n, dtype=torch.bool)
        self.starts_word = [True] * n
        self.has_comma = [False] * n
        self.content_word = [False] * n
        self.token_bytes = [b"x"] * n

    def decode(self, tokens):
        return " ".join(map(str, tokens))


def rows_for(seeds, temperature=0.8, new_tokens=12, contrast=0.0):
    return RowDecoder(Vocab(403), BanTable(), seeds, temperature=temperature, top_k=50, top_p=0.95, budget=10**9,
                      count=len, separator="", min_new_tokens=new_tokens, max_new_tokens=new_tokens,
                      contrast=contrast)


class Recorder:
    """An eager stand-in for capture_cuda: 'replay' runs the step and writes into one fixed output buffer,
    as a graph's replay does."""

    def __init__(self):
        self.captures = []

    def __call__(self, step):
        self.captures.append((step.rows, step.bucket))
        out = step.compute().clone()
        return (lambda: out.copy_(step.compute())), out, None


@pytest.fixture
def recorder(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(graphs, "ENABLED", True)
    monkeypatch.setattr(graphs, "DEVICE_TYPES", ("cpu",))
    monkeypatch.setattr(graphs, "CAPTURE", rec)
    return rec


def tokens_of(model, seeds, **kw):
    rows = decode_fast(model, CONTEXT, rows_for(seeds, **kw), unconditional_ids=[0])
    return rows.tokens


def eager_tokens(model, seeds, monkeypatch, **kw):
    with monkeypatch.context() as m:
        m.setattr(graphs, "ENABLED", False)
        return tokens_of(model, seeds, **kw)


def test_buckets_are_powers_of_two_from_64_capped_at_the_model():
    assert [graphs.bucket_for(n, 1024) for n in (1, 64, 65, 200, 1000)] == [64, 64, 128, 256, 1024]
    assert graphs.bucket_for(40, 48) == 48 and graphs.bucket_for(48, 48) == 48


@torch.inference_mode()
@pytest.mark.parametrize("rows", [1, 3])
def test_the_static_step_gives_the_eager_steps_logits(rows):
    model = tiny_gpt2()
    fast = FastGPT2(model)
    steps = [[7 + r + i for r in range(rows)] for i in range(6)]
    want = [fast.prefill(torch.tensor([CONTEXT]), rows, len(CONTEXT) + len(steps))]
    for i, tokens in enumerate(steps):
        want.append(fast.step(torch.tensor(tokens), len(CONTEXT) + i))
    other = FastGPT2(model)
    got = [other.prefill(torch.tensor([CONTEXT]), rows, len(CONTEXT) + len(steps))]
    static = graphs.StaticStep(other, rows, graphs.bucket_for(len(CONTEXT) + len(steps), 48))
    static.load(other.kv, len(CONTEXT))
    for i, tokens in enumerate(steps):
        got.append(static.run(torch.tensor(tokens), len(CONTEXT) + i).clone())
    torch.testing.assert_close(torch.stack(got), torch.stack(want), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("temperature", [0.8, 0.0])
@pytest.mark.parametrize("n", [1, 4])
def test_graphed_decoding_gives_the_eager_text(recorder, monkeypatch, temperature, n):
    model = tiny_gpt2(seed=3)
    for seed in range(3):
        seeds = [seed * 10 + i for i in range(n)]
        assert tokens_of(model, seeds, temperature=temperature) == eager_tokens(model, seeds, monkeypatch,
                                                                                temperature=temperature)
    assert recorder.captures == [(n, 48)]  # captured once, replayed by every later call


def test_greedy_graphed_decoding_equals_generate(recorder):
    model = tiny_gpt2(seed=4)
    model.generation_config.pad_token_id = 0
    want = decode_reference(model, CONTEXT, rows_for([1], temperature=0.0)).tokens
    assert tokens_of(model, [1], temperature=0.0) == want
    assert recorder.captures


def test_contrastive_graphed_decoding_gives_the_eager_text(recorder, monkeypatch):
    model = tiny_gpt2(seed=5)
    assert tokens_of(model, [3, 4], contrast=0.5) == eager_tokens(model, [3, 4], monkeypatch, contrast=0.5)
    assert sorted(recorder.captures) == [(2, 48), (2, 48)]  # one per cache: with and without the input


def test_steps_are_captured_lazily_per_row_count_and_bucket(recorder, monkeypatch):
    monkeypatch.setattr(graphs, "FIRST_BUCKET", 8)
    model = tiny_gpt2()
    tokens_of(model, [1], new_tokens=2)  # 7 positions: bucket 8
    tokens_of(model, [2], new_tokens=2)
    tokens_of(model, [1, 2], new_tokens=2)
    tokens_of(model, [1], new_tokens=6)  # 11 positions: bucket 16
    assert recorder.captures == [(1, 8), (2, 8), (1, 16)]


def test_graphs_are_recaptured_after_the_weights_move(recorder, monkeypatch):
    model = tiny_gpt2(seed=6)
    first = tokens_of(model, [1])
    model.to(torch.float64).to(torch.float32)  # new storage, as a host's offload and reload gives
    assert tokens_of(model, [1]) == first
    assert len(recorder.captures) == 2


def test_graphs_are_freed_with_the_model_and_by_a_host_move(recorder):
    model = tiny_gpt2()
    tokens_of(model, [1])
    step = weakref.ref(next(iter(model._prompt_expander_fast.graphs.steps.values())))
    PromptExpanderModel(model).to("cpu")  # what ComfyUI's and Forge's patchers call to offload
    gc.collect()
    assert step() is None
    tokens_of(model, [1])
    step = weakref.ref(next(iter(model._prompt_expander_fast.graphs.steps.values())))
    del model
    gc.collect()
    assert step() is None


def test_a_failed_capture_falls_back_with_one_log_line(monkeypatch, caplog):
    model = tiny_gpt2(seed=7)
    want = eager_tokens(model, [1, 2], monkeypatch)

    def broken(step):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs, "ENABLED", True)
    monkeypatch.setattr(graphs, "DEVICE_TYPES", ("cpu",))
    monkeypatch.setattr(graphs, "CAPTURE", broken)
    with caplog.at_level(logging.WARNING, logger="prompt_expander"):
        assert tokens_of(model, [1, 2]) == want
        assert tokens_of(model, [1, 2]) == want
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "capture failed" in lines[0] and "not permitted" in lines[0]


def test_a_replay_that_disagrees_with_the_eager_step_is_never_used(monkeypatch, caplog):
    model = tiny_gpt2(seed=8)
    want = eager_tokens(model, [1], monkeypatch)

    def stale(step):  # a graph that reads the wrong memory: its output never changes
        out = torch.full_like(step.compute(), 3.0)
        return (lambda: None), out, None

    monkeypatch.setattr(graphs, "ENABLED", True)
    monkeypatch.setattr(graphs, "DEVICE_TYPES", ("cpu",))
    monkeypatch.setattr(graphs, "CAPTURE", stale)
    with caplog.at_level(logging.WARNING, logger="prompt_expander"):
        assert tokens_of(model, [1]) == want
        assert tokens_of(model, [1]) == want
    assert len(caplog.records) == 1 and "did not match" in caplog.records[0].getMessage()


def test_cpu_decoding_never_captures(monkeypatch):
    calls = []
    monkeypatch.setattr(graphs, "ENABLED", True)
    monkeypatch.setattr(graphs, "CAPTURE", lambda step: calls.append(step))
    model = tiny_gpt2()
    tokens_of(model, [1])
    assert calls == [] and model._prompt_expander_fast.graphs is None


def test_many_rows_and_big_caches_decode_without_graphs(recorder, monkeypatch):
    model = tiny_gpt2()
    tokens_of(model, list(range(graphs.MAX_ROWS + 1)))
    monkeypatch.setattr(graphs, "MAX_CACHE_BYTES", 1000)
    tokens_of(model, [1])
    assert recorder.captures == []


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_graphs_give_the_eager_text_and_free_their_memory(monkeypatch, dtype):
    model = tiny_gpt2(seed=9).to("cuda", dtype)
    eager = [eager_tokens(model, [s, s + 1], monkeypatch) for s in range(4)]
    monkeypatch.setattr(graphs, "ENABLED", True)
    before = torch.cuda.memory_allocated()
    assert [tokens_of(model, [s, s + 1]) for s in range(4)] == eager
    fast = model._prompt_expander_fast
    assert fast.graphs.disabled is None and len(fast.graphs.steps) == 1
    assert next(iter(fast.graphs.steps.values())).graph is not None
    decoding.FastGPT2  # noqa: B018 (the eager path stays importable beside the graphs)
    graphs.release_graphs(model)
    gc.collect()
    assert torch.cuda.memory_allocated() <= before


@cuda
def test_cuda_greedy_graphed_decoding_equals_generate(monkeypatch):
    model = tiny_gpt2(seed=10).to("cuda")
    model.generation_config.pad_token_id = 0
    want = decode_reference(model, CONTEXT, rows_for([1], temperature=0.0)).tokens
    monkeypatch.setattr(graphs, "ENABLED", True)
    assert tokens_of(model, [1], temperature=0.0) == want


def test_offloading_to_cpu_frees_the_graphs(recorder):
    from prompt_expander.host.hosting import offload_to_cpu
    model = tiny_gpt2()
    tokens_of(model, [1])
    step = weakref.ref(next(iter(model._prompt_expander_fast.graphs.steps.values())))
    offload_to_cpu(model)
    gc.collect()
    assert step() is None
