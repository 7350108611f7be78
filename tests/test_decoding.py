"""The fast decode loop: same logits as the transformers model, and weights changed in place are seen."""
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from prompt_expander.decoding import FastGPT2, StreamedWeight, _stream_matmul, weights_changed


def tiny_gpt2(vocab_size=403, seed=0):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab_size, n_positions=48, n_embd=32, n_layer=2, n_head=4, bos_token_id=0,
                     eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def fast_logits(model, ids):
    """Logits at every position from the fast loop: a prefill of the first token, then one step each."""
    fast = FastGPT2(model)
    out = [fast.prefill(torch.tensor([ids[:1]]), 1, len(ids))]
    for pos in range(1, len(ids)):
        out.append(fast.step(torch.tensor([ids[pos]]), pos))
    return torch.cat(out)


@pytest.mark.parametrize("out_dim", [400, 403, 8])
@pytest.mark.parametrize("rows", [1, 3])
def test_stream_matmul_is_a_matmul(out_dim, rows):
    g = torch.Generator().manual_seed(out_dim + rows)
    x, w = torch.randn(rows, 32, generator=g), torch.randn(out_dim, 32, generator=g)
    got = _stream_matmul(x, StreamedWeight(w, 8))
    assert got.shape == (rows, out_dim)
    torch.testing.assert_close(got, x @ w.t(), rtol=1e-5, atol=1e-5)


@torch.inference_mode()
def test_fast_logits_equal_the_model_for_odd_vocabularies():
    model = tiny_gpt2(vocab_size=403)  # not a multiple of the head chunks, like GPT-2's 50257
    ids = [5, 17, 300, 402, 9, 9, 44, 1]
    torch.testing.assert_close(fast_logits(model, ids), model(torch.tensor([ids])).logits[0], rtol=1e-4, atol=1e-5)


@torch.inference_mode()
def test_greedy_tokens_equal_generate():
    model = tiny_gpt2(vocab_size=403, seed=3)
    ids = [7, 8, 9]
    ref = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, 3, dtype=torch.long), do_sample=False,
                         max_new_tokens=20, min_new_tokens=20, pad_token_id=0)[0, 3:].tolist()
    fast = FastGPT2(model)
    logits, got = fast.prefill(torch.tensor([ids]), 1, 23), []
    for pos in range(3, 23):
        tok = int(logits.argmax(-1))
        got.append(tok)
        logits = fast.step(torch.tensor([tok]), pos)
    assert got == ref


@pytest.mark.parametrize("made_in_inference_mode", [False, True])
def test_weights_changed_in_place_are_seen(made_in_inference_mode):
    """A style mixed in place (copy_ into the parameters) must reach the fast loop's cached weight copies,
    also for a model loaded under inference_mode (ComfyUI runs nodes so), whose tensors have no versions."""
    if made_in_inference_mode:
        with torch.inference_mode():
            model = tiny_gpt2()
    else:
        model = tiny_gpt2()
    ids = [1, 2, 3, 4]
    fast = FastGPT2(model)
    with torch.inference_mode():
        fast.prefill(torch.tensor([ids]), 1, 8)
        fast.step(torch.tensor([5]), 4)  # fills the cache of row-major weight copies
    with torch.inference_mode():
        for block in model.transformer.h:
            block.mlp.c_fc.weight.copy_(torch.randn_like(block.mlp.c_fc.weight))
        weights_changed(model)
    with torch.inference_mode():
        want = model(torch.tensor([ids + [5]])).logits[0, -1]
        fast.prefill(torch.tensor([ids]), 1, 8)
        got = fast.step(torch.tensor([5]), 4)[0]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@torch.inference_mode()
def test_a_model_cast_by_its_host_is_seen():
    model = tiny_gpt2()
    ids = [3, 1, 4, 1, 5]
    fast_logits(model, ids)
    model.to(torch.float64)  # a host moving or casting the model keeps the parameter objects, new storage
    got = fast_logits(model, ids)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, model(torch.tensor([ids])).logits[0], rtol=1e-6, atol=1e-8)
