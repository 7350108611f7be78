"""The fast decode loop: same logits as the transformers model, and weights changed in place are seen."""
import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from prompt_expander.expansion import decoding
from prompt_expander.expansion.decoding import FastGPT2, StreamedWeight, _stream_matmul, packed_linear_available, weights_changed


def tiny_gpt2(vocab_size=403, seed=0):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab_size, n_positions=48, n_embd=32, n_layer=2, n_head=4, bos_token_id=0,
                     eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def fast_rows_logits(model, context, steps):
    """Last-position logits of a multi-row decode: `steps` is one token per row for each step."""
    fast = FastGPT2(model)
    rows = len(steps[0])
    out = [fast.prefill(torch.tensor([context]), rows, len(context) + len(steps))]
    for i, tokens in enumerate(steps):
        out.append(fast.step(torch.tensor(tokens), len(context) + i))
    return fast, torch.stack(out)


def model_rows_logits(model, context, steps):
    rows = [context + [step[r] for step in steps] for r in range(len(steps[0]))]
    full = model(torch.tensor(rows)).logits  # [rows, positions, vocab]
    return full[:, len(context) - 1:].transpose(0, 1)


def fast_logits(model, ids):
    """Logits at every position from the fast loop: a prefill of the first token, then one step each."""
    return fast_rows_logits(model, ids[:1], [[t] for t in ids[1:]])[1][:, 0]


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


@pytest.mark.parametrize("rows", [1, 4])
@pytest.mark.parametrize("made_in_inference_mode", [False, True])
def test_weights_changed_in_place_are_seen(made_in_inference_mode, rows):
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
        fast.prefill(torch.tensor([ids]), rows, 8)
        fast.step(torch.tensor([5] * rows), 4)  # fills the cache of weight copies (packed, or streamed without oneDNN)
    with torch.inference_mode():
        for block in model.transformer.h:
            block.mlp.c_fc.weight.copy_(torch.randn_like(block.mlp.c_fc.weight))
        weights_changed(model)
    with torch.inference_mode():
        want = model(torch.tensor([ids + [5]])).logits[0, -1]
        fast.prefill(torch.tensor([ids]), rows, 8)
        got = fast.step(torch.tensor([5] * rows), 4)
    torch.testing.assert_close(got, want.expand(rows, -1), rtol=1e-4, atol=1e-5)


@torch.inference_mode()
def test_a_model_cast_by_its_host_is_seen():
    model = tiny_gpt2()
    ids = [3, 1, 4, 1, 5]
    fast_logits(model, ids)
    model.to(torch.float64)  # a host moving or casting the model keeps the parameter objects, new storage
    got = fast_logits(model, ids)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, model(torch.tensor([ids])).logits[0], rtol=1e-6, atol=1e-8)
    # Several rows too, where oneDNN cannot pack float64 and addmm takes over.
    fast, rows = fast_rows_logits(model, ids, [[7, 8, 9]] * 2)
    assert not fast._use_packed
    torch.testing.assert_close(rows, model_rows_logits(model, ids, [[7, 8, 9]] * 2), rtol=1e-6, atol=1e-8)


def fp16_valued(model):
    """The model as saved in fp16 and loaded in fp32: every weight holds fp16 values."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    return model


@pytest.mark.parametrize("rows", [1, 3, 8, 17])
@pytest.mark.parametrize("kernel", ["fp16", "packed", "neither"])
@torch.inference_mode()
def test_many_rows_give_the_model_logits(rows, kernel, monkeypatch):
    """From 1 row the loop multiplies fp16-valued weights with FBGEMM's fp16-weight matmul and others with
    oneDNN pre-packed weights, where this torch has them; without either it streams or falls back to addmm.
    All give each row the logits of the model run on that row alone."""
    model = tiny_gpt2(vocab_size=403, seed=rows)
    if kernel == "fp16":
        if not decoding.fp16_weight_linear_available():
            pytest.skip("this torch build has no FBGEMM")
        fp16_valued(model)
        expected = decoding.Fp16ValuedWeight
    elif kernel == "packed":
        if not packed_linear_available(torch.float32):
            pytest.skip("this torch build cannot pre-pack weights for oneDNN")
        expected = decoding.PackedWeight
    else:
        monkeypatch.setattr(decoding, "packed_linear_available", lambda dtype: False)
        monkeypatch.setattr(decoding, "fp16_weight_linear_available", lambda: False)
        expected = None
    context = [5, 17, 300, 402, 9]
    g = torch.Generator().manual_seed(rows)
    steps = torch.randint(0, 403, (6, rows), generator=g).tolist()
    fast, got = fast_rows_logits(model, context, steps)
    kinds = {type(prepared) for _, prepared in fast._packed.values()}
    assert kinds == ({expected} if expected else set())
    assert (fast._lean is not None) == (expected is not None)
    torch.testing.assert_close(got, model_rows_logits(model, context, steps), rtol=1e-4, atol=1e-5)


@torch.inference_mode()
def test_fp16_weight_matmul_rows_do_not_depend_on_each_other_or_on_threads():
    """Variation i of a batch must equal expand(seed + i) alone: a row's product may not depend on how many
    rows share the call (FBGEMM's AVX2 kernels for 1 and 2 rows sum differently: see Fp16RowPlan), on the
    rows beside it, nor on how many threads the host gives torch."""
    if not decoding.fp16_weight_linear_available():
        pytest.skip("this torch build has no FBGEMM")
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(96, 64, generator=g).half().float()
    x, bias = torch.randn(60, 64, generator=g), torch.randn(96, generator=g)
    prepared = decoding.Fp16ValuedWeight(weight, bias)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = torch.cat([prepared(x[i:i + 1]) for i in range(60)])
        for n in (2, 4):
            torch.set_num_threads(n)
            for rows in range(1, 61):
                assert torch.equal(prepared(x[:rows]), alone[:rows]), (n, rows)
            assert torch.equal(prepared(x[7:9]), alone[7:9])
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(alone, x @ weight.t() + bias, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(prepared(x, tanh_gelu=True, residual=x[:, :1]),
                               torch.nn.functional.gelu(x @ weight.t() + bias, approximate="tanh") + x[:, :1],
                               rtol=1e-5, atol=1e-5)


@torch.inference_mode()
def test_a_bias_packed_into_the_fp16_matmul_adds_exactly_as_after_it():
    """The decode packs each bias with its weight; the sums must be the bits the separate `+ bias` gave, or every
    expansion recorded before would change."""
    if not decoding.fp16_weight_linear_available():
        pytest.skip("this torch build has no FBGEMM")
    g = torch.Generator().manual_seed(3)
    weight, bias = torch.randn(96, 64, generator=g).half().float(), torch.randn(96, generator=g)
    with_bias, without = decoding.Fp16ValuedWeight(weight, bias), decoding.Fp16ValuedWeight(weight)
    for rows in (1, 2, 3, 8, 17):
        x = torch.randn(rows, 64, generator=g)
        assert torch.equal(with_bias(x), without(x) + bias), rows


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@torch.inference_mode()
def test_cuda_matmul_rows_do_not_depend_on_the_row_count(dtype):
    """Variation i must equal seed + i alone on a GPU too: the GPU decode's matmuls (addmm by a layer's weight,
    x @ head.T) must give a row the same bits whatever the row count. No session has run this on a GPU yet;
    if it fails, FastGPT2.decode_rows is where a decode's rows would be padded to one count."""
    g = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(512, 1536, generator=g), torch.randn(1536, generator=g)
    head, x = torch.randn(8192, 512, generator=g), torch.randn(40, 512, generator=g)
    weight, bias, head, x = (t.to("cuda", dtype) for t in (weight, bias, head, x))
    for product in (lambda rows: torch.addmm(bias, rows, weight), lambda rows: rows @ head.t()):
        alone = torch.cat([product(x[i:i + 1]) for i in range(40)])
        for rows in range(2, 41):
            assert torch.equal(product(x[:rows]), alone[:rows]), rows


def test_fp16_row_plan_pads_calls_away_from_the_odd_kernels():
    """What FBGEMM gave on an AVX2-only AMD EPYC for 1 to 8 identical rows: the 1-row and 2-row kernels each
    give their own bits (a, b), every other kernel the common ones (c)."""
    seen = ["a", "bb", "ccc", "cccc", "ccccc", "cccccc", "cccccbb", "cccccccc"]
    value = {"a": 1.0, "b": 2.0, "c": 3.0}
    plan = decoding.Fp16RowPlan.from_results([torch.tensor([[value[k]] for k in rows]) for rows in seen])
    assert plan.padded == (3, 3, 3, 4, 5, 6, 8, 8) and plan.chunk == 8
    uniform = decoding.Fp16RowPlan.from_results([torch.ones(m, 2) for m in range(1, 6)])
    assert uniform.padded == (1, 2, 3, 4, 5)
    mixed = [torch.tensor([[1.0], [2.0]])] * 2  # no row count whose rows all agree
    assert decoding.Fp16RowPlan.from_results(mixed) is None


@torch.inference_mode()
def test_an_fp16_row_plan_pads_and_chunks_to_the_same_product():
    if not decoding.fp16_weight_linear_available():
        pytest.skip("this torch build has no FBGEMM")
    g = torch.Generator().manual_seed(1)
    weight, x = torch.randn(24, 32, generator=g).half().float(), torch.randn(11, 32, generator=g)
    packed = decoding.Fp16ValuedWeight(weight).packed
    out = decoding.Fp16RowPlan((3, 3, 3, 4))(x, packed, {})  # chunks of 4, 4 and 3 rows
    assert out.shape == (11, 24)
    torch.testing.assert_close(out, x @ weight.t(), rtol=1e-5, atol=1e-5)


def test_a_decode_computes_the_rows_the_fp16_row_plan_asks_for(tiny_model_dir, monkeypatch):
    """Where FBGEMM's 1-row and 2-row kernels sum in their own ways, a decode of 1 or 2 rows through them runs 3,
    so that every row takes the common path, and variation i still equals seed + i alone."""
    from prompt_expander.expansion.expander import Expander
    from prompt_expander.model.loading import load_model, load_tokenizer
    if not decoding.fp16_weight_linear_available():
        pytest.skip("this torch build has no FBGEMM")
    model = fp16_valued(load_model(tiny_model_dir, torch.device("cpu"), torch.float32))  # a model of its own
    expander = Expander(model, load_tokenizer(tiny_model_dir), tiny_model_dir, "tiny-gpt2")
    monkeypatch.setattr(decoding, "_FP16_PLAN", [decoding.Fp16RowPlan((3, 3, 3, 4, 5, 6, 8, 8))])
    widths = []
    for name in ("step", "step_rows"):
        def spy(self, tokens, *args, _real=getattr(FastGPT2, name), **kwargs):
            widths.append(tokens.shape[0])
            return _real(self, tokens, *args, **kwargs)
        monkeypatch.setattr(FastGPT2, name, spy)
    for contrast in (0.0, 0.5):
        alone = [expander.expand("a red fox", seed=3 + i, contrast=contrast).text for i in range(7)]
        for n in (3, 7):
            assert [r.text for r in expander.expand_many("a red fox", n, seed=3, contrast=contrast)] == alone[:n]
    # 1, 3 and 7 rows; 2, 6 and 14 with contrast (past the plan's 8 rows, Fp16RowPlan splits each call itself)
    assert set(widths) == {3, 8, 6, 14}
    for contrast, width in ((0.0, 3), (0.5, 4)):  # texts decoded together: 2 rows, 4 with contrast
        widths.clear()
        expander.expand_subjects(["a red fox", "an owl"], seed=3, contrast=contrast)
        assert set(widths) == {width}
    widths.clear()  # contrast for the first 2 words: 2 rows (run as 3), then the 1 with the input (run as 3)
    alone = [expander.expand("a red fox", seed=3 + i, contrast=0.5, contrast_words=2).text for i in range(7)]
    assert [r.text for r in expander.expand_many("a red fox", 7, seed=3, contrast=0.5, contrast_words=2)] == alone
    assert set(widths) == {3, 14, 8}
    with torch.no_grad():  # weights with other fp32 values go to oneDNN: nothing to pad
        for param in model.parameters():
            param.add_(torch.full_like(param, 1e-6))
    weights_changed(model)
    widths.clear()
    expander.expand("a red fox", seed=3, contrast=0.0)
    assert set(widths) == {1}


@torch.inference_mode()
def test_a_bf16_model_on_a_cpu_that_cannot_pack_bf16_multiplies_widened_to_fp32(monkeypatch):
    """Not the emulated fallback kernels, which chose by row count (variation i differed from seed + i) and
    took 97 s for 8 variations of the default on an AVX2-only CPU."""
    if not packed_linear_available(torch.float32):
        pytest.skip("this torch build cannot pack fp32 weights for oneDNN")
    monkeypatch.setattr(decoding, "packed_linear_available", lambda dtype: dtype == torch.float32)
    model = tiny_gpt2(seed=4).to(torch.bfloat16)
    context = [5, 17, 300, 402, 9]
    steps = [[7, 8], [9, 10], [11, 12]]
    fast, got = fast_rows_logits(model, context, steps)
    assert {type(prepared) for _, prepared in fast._packed.values()} == {decoding.WidenedWeight}
    assert fast._lean is not None and got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), model_rows_logits(model, context, steps).float(), rtol=0.05, atol=0.05)


def test_holds_fp16_values():
    assert decoding.holds_fp16_values(torch.tensor([0.5, -2.0, 65504.0]))
    assert not decoding.holds_fp16_values(torch.tensor([0.1]))  # rounds in fp16
    assert not decoding.holds_fp16_values(torch.tensor([1e6]))  # past fp16's range
    assert not decoding.holds_fp16_values(torch.tensor([0.5], dtype=torch.float64))


def test_packed_linear_fuses_the_activation_and_the_residual():
    if not packed_linear_available(torch.float32):
        pytest.skip("this torch build cannot pre-pack weights for oneDNN")
    g = torch.Generator().manual_seed(0)
    x, w, b, res = (torch.randn(5, 32, generator=g), torch.randn(48, 32, generator=g),
                    torch.randn(48, generator=g), torch.randn(5, 48, generator=g))
    weight = decoding.PackedWeight(w, b)
    plain = x @ w.t() + b
    torch.testing.assert_close(weight(x), plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weight(x, tanh_gelu=True), torch.nn.functional.gelu(plain, approximate="tanh"),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weight(x, residual=res), res + plain, rtol=1e-5, atol=1e-5)


@torch.inference_mode()
def test_a_model_that_decoded_can_be_deep_copied():
    """Hosts and training deep-copy models; the decode cache (opaque oneDNN tensors) is rebuilt, not copied."""
    model = tiny_gpt2()
    context, steps = [1, 2, 3], [[4, 5, 6, 7]] * 3
    fast, first = fast_rows_logits(model, context, steps)
    model._prompt_expander_fast = fast
    twin = copy.deepcopy(model)
    assert twin._prompt_expander_fast is None
    torch.testing.assert_close(fast_rows_logits(twin, context, steps)[1], first)


@torch.inference_mode()
def test_rows_at_different_positions_share_a_step_and_keep_their_own_logits():
    """Contrast decodes the rows with and without the input in one batch (FastGPT2.step_rows)."""
    model = tiny_gpt2(seed=2)
    long_ctx, short_ctx, steps = [5, 17, 300, 402, 9], [7, 8], [11, 12, 13]
    want = {}
    for name, ctx in (("long", long_ctx), ("short", short_ctx)):
        fast = FastGPT2(model)
        want[name] = [fast.prefill(torch.tensor([ctx]), 1, len(ctx) + len(steps))]
        for i, t in enumerate(steps):
            want[name].append(fast.step(torch.tensor([t]), len(ctx) + i))
    fast = FastGPT2(model)
    total = len(long_ctx) + len(steps)
    caches = []
    for ctx in (long_ctx, short_ctx):
        fast.prefill(torch.tensor([ctx]), 1, total)
        # The short row's unwritten positions are masked, but a NaN there would still poison its sum.
        assert all(bool((kv[:, :, :, len(ctx):] == 0).all()) for kv in fast.kv)
        caches.append(fast.kv)
    fast.kv = [torch.cat([a, b], dim=1) for a, b in zip(*caches)]
    for i, t in enumerate(steps):
        positions = torch.tensor([len(long_ctx) + i, len(short_ctx) + i])
        out = fast.step_rows(torch.tensor([t, t]), positions, len(long_ctx) + i + 1)
        torch.testing.assert_close(out[0], want["long"][i + 1][0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out[1], want["short"][i + 1][0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 4])
@torch.inference_mode()
def test_a_bf16_model_multiplies_packed_weights_from_one_row(rows):
    """bf16 (a model's cpu_dtype) packs every matmul, one row included, and keeps no streamed fp32-style
    copies; its logits are the bf16 model's own, within bf16's precision."""
    if not packed_linear_available(torch.bfloat16):
        pytest.skip("this torch build cannot pre-pack bf16 weights for oneDNN")
    model = tiny_gpt2(vocab_size=403, seed=5).to(torch.bfloat16)
    context = [5, 17, 300, 402, 9]
    steps = [[7] * rows, [8] * rows, [9] * rows]
    fast, got = fast_rows_logits(model, context, steps)
    assert fast._use_packed and fast._packed_from == 1 and not fast._streamed
    want = model_rows_logits(model.float(), context, steps)
    torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("rows", [1, 2, 5])
@torch.inference_mode()
def test_the_lean_layers_compute_exactly_what_the_blocks_do(rows, monkeypatch):
    """_lean_layers is _block without the per-matmul choices: the same operations, so the same bits."""
    if not (packed_linear_available(torch.float32) or decoding.fp16_weight_linear_available()):
        pytest.skip("this torch build has neither oneDNN packing nor FBGEMM")
    model = fp16_valued(tiny_gpt2(vocab_size=403, seed=11))
    context, steps = [5, 17, 300, 402, 9], [[7] * rows, [8] * rows, [9] * rows]
    lean = fast_rows_logits(model, context, steps)[1]
    monkeypatch.setattr(FastGPT2, "_lean_plan", lambda self: None)
    fast, blocks = fast_rows_logits(model, context, steps)
    assert fast._lean is None
    assert torch.equal(lean, blocks)


@pytest.mark.parametrize("host_tf32", [True, False])
def test_a_cuda_decode_runs_without_tf32_and_gives_the_hosts_setting_back(host_tf32):
    """A1111 turns TF32 on, and its rounding would change a seed's text as fp16 does; the flag can be set without
    a GPU, so this runs anywhere."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = host_tf32
    try:
        check_tf32_is_off_while_decoding(host_tf32)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def check_tf32_is_off_while_decoding(host_tf32):
    with decoding.ieee_fp32_matmul(torch.device("cuda", 0)):
        assert torch.backends.cuda.matmul.allow_tf32 is False
    assert torch.backends.cuda.matmul.allow_tf32 is host_tf32
    with pytest.raises(KeyboardInterrupt), decoding.ieee_fp32_matmul(torch.device("cuda", 0)):
        raise KeyboardInterrupt  # an interrupted decode gives it back too
    assert torch.backends.cuda.matmul.allow_tf32 is host_tf32
    with decoding.ieee_fp32_matmul(torch.device("cpu")):
        assert torch.backends.cuda.matmul.allow_tf32 is host_tf32  # a CPU decode leaves the host's GPU alone
