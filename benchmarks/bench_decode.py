"""Decode speed: our fast loop against stock transformers generate() on the same weights, same run."""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prompt_expander.expansion import graphs  # noqa: E402
from prompt_expander.expansion.decoding import decode_fast  # noqa: E402
from prompt_expander.expansion.sampling import RowDecoder  # noqa: E402
from prompt_expander.expansion.vocab import BanTable  # noqa: E402
from prompt_expander.fileio import write_json_atomic  # noqa: E402

NEW_TOKENS = 60
GPT2_VOCAB = 50257


def timed(fn, sync) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def paired_times(fns: dict, repeats: int, sync) -> dict:
    """Run the functions in turn, `repeats` rounds: a shared machine's slow spells then hit all of them
    alike, and a ratio taken within each round is steadier than a ratio of medians taken minutes apart."""
    for fn in fns.values():
        fn()  # warm-up
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn, sync))
    return times


def rows_for(vocab, n, seed=0, new_tokens=NEW_TOKENS):
    # Exactly `new_tokens` tokens per row, as generate() with min_new_tokens = max_new_tokens makes.
    return RowDecoder(vocab, BanTable(), [seed + i for i in range(n)], temperature=0.8, top_k=50, top_p=0.95,
                      budget=10**9, count=len, separator="", min_new_tokens=new_tokens, max_new_tokens=new_tokens)


def stock(model, context, n, new_tokens=NEW_TOKENS):
    ids = torch.tensor([context], device=model.device)
    return model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=0.8, top_k=50,
                          top_p=0.95, max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_return_sequences=n,
                          pad_token_id=model.config.eos_token_id)


def graphed(fn):
    """fn with CUDA graphs on (they are opt-in), whatever the environment says."""
    def run():
        was, graphs.ENABLED = graphs.ENABLED, True
        try:
            return fn()
        finally:
            graphs.ENABLED = was
    return run


def graph_memory_mb(model, context, vocab, n) -> float:
    """GPU memory the captured steps for n rows add: their static KV cache and their graph's pool."""
    graphs.release_graphs(model)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_reserved()
    with torch.inference_mode():
        graphed(lambda: decode_fast(model, context, rows_for(vocab, n)))()
    torch.cuda.synchronize()
    return (torch.cuda.memory_reserved() - before) / 2**20


def bench_model(name, model, vocab, context, repeats, sync, cuda_graphs=False):
    res = {"model": name, "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
           "device": str(model.device), "dtype": str(model.dtype).replace("torch.", "")}
    fns = {
        "ours_b1": lambda: decode_fast(model, context, rows_for(vocab, 1)),
        "stock_b1": lambda: stock(model, context, 1),
        "ours_b8": lambda: decode_fast(model, context, rows_for(vocab, 8)),
        "stock_b8": lambda: stock(model, context, 8),
    }
    cuda_graphs = cuda_graphs and model.device.type == "cuda"
    if cuda_graphs:
        for n in (1, 8):
            res[f"graph_memory_b{n}_mb"] = graph_memory_mb(model, context, vocab, n)
        fns["graphs_b1"] = graphed(fns["ours_b1"])
        fns["graphs_b8"] = graphed(fns["ours_b8"])
    with torch.inference_mode():
        t = paired_times(fns, repeats, sync)
    for key, times in t.items():
        res[f"{key}_ms"] = 1000 * statistics.median(times)
    # Ratios are medians of per-round ratios (see paired_times).
    for n in (1, 8):
        res[f"speedup_b{n}"] = statistics.median(s / o for s, o in zip(t[f"stock_b{n}"], t[f"ours_b{n}"]))
        if cuda_graphs:
            res[f"graphs_speedup_b{n}"] = statistics.median(o / g for o, g in zip(t[f"ours_b{n}"], t[f"graphs_b{n}"]))
    if cuda_graphs:  # graph_memory_mb made them: say if they were turned off, so a table never hides it
        res["graphs_disabled"] = model._prompt_expander_fast.graphs.disabled
    res["ours_8_over_1"] = statistics.median(e / o for e, o in zip(t["ours_b8"], t["ours_b1"]))
    return res


def random_gpt2_small(vocab_size, device, dtype):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=vocab_size, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    return GPT2LMHeadModel(cfg).to(device, dtype).eval()


def own_settings(r: dict) -> str:
    """The model's own decode settings, as the benchmark's full expand() call used them."""
    words = f" on the first {r['contrast_words']} words" if r.get("contrast_words") else ""
    pick = (f", the most on-topic of {r['candidates']}" + (f" beginnings of {r['pick_words']} words" if r.get("pick_words")
            else " candidates")) if r.get("candidates", 1) > 1 else ""
    return f"contrast {r['contrast']}{words}{pick}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None, help="model folder (default models/default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--skip-small", action="store_true", help="skip the 124M GPT-2-small-sized model")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--cuda-graphs", action="store_true",
                    help=f"on CUDA, also time decoding with CUDA graphs (opt-in for users: {graphs.GRAPHS_ENV}=1)")
    args = ap.parse_args(argv)
    from prompt_expander.expansion.resident import load_expander
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    exp = load_expander(args.model, device=device, dtype=args.dtype)
    context = exp._context_ids("woman portrait", NEW_TOKENS)
    results = [bench_model(exp.model_id, exp.model, exp.vocab, context, args.repeats, sync, args.cuda_graphs)]
    # The model's own settings (the shipped default's card: contrast on the first 16 words, the most on-topic of 6
    # beginnings of 16), and beside them the same without the draft table's guesses, without the pick, with
    # neither pick nor contrast, and with 4 beginnings.
    def without_guesses():  # the card's call with every token its own step (no draft table)
        exp.guess_tokens = False
        try:
            return exp.expand("woman portrait", seed=1)
        finally:
            exp.guess_tokens = True

    calls = {"one": lambda: exp.expand("woman portrait", seed=1),
             "one_no_guess": without_guesses,
             "eight": lambda: exp.expand_many("woman portrait", 8, seed=1),
             "one_no_pick": lambda: exp.expand("woman portrait", seed=1, candidates=1),
             "one_plain": lambda: exp.expand("woman portrait", seed=1, candidates=1, contrast=0),
             "one_candidates4": lambda: exp.expand("woman portrait", seed=1, candidates=4)}
    if args.cuda_graphs and device.type == "cuda":
        calls["one_graphs"], calls["eight_graphs"] = graphed(calls["one"]), graphed(calls["eight"])
    with torch.inference_mode():  # what a user waits for: context, decode with the CLIP budget, clean-up
        t = paired_times(calls, args.repeats, sync)
    results[0]["expand_call_ms"] = 1000 * statistics.median(t["one"])
    # Machines differ between sessions, and a shared one between spells of an hour: stock generate() on the same
    # weights in the same run is a yardstick for telling a change of ours from a change of machine, if a rough one
    # (its time is more Python and less reading of weights than ours).
    results[0]["expand_over_stock_b1"] = results[0]["expand_call_ms"] / results[0]["stock_b1_ms"]
    results[0]["expand_many8_ms"] = 1000 * statistics.median(t["eight"])
    results[0]["expand_many8_over_1"] = statistics.median(e / o for e, o in zip(t["eight"], t["one"]))
    results[0]["expand_call_plain_ms"] = 1000 * statistics.median(t["one_plain"])
    results[0]["expand_candidates4_ms"] = 1000 * statistics.median(t["one_candidates4"])
    results[0]["expand_candidates4_over_1"] = statistics.median(c / o for c, o in zip(t["one_candidates4"], t["one"]))
    results[0]["expand_no_guess_ms"] = 1000 * statistics.median(t["one_no_guess"])
    results[0]["expand_guess_over_no_guess"] = statistics.median(o / g for o, g in zip(t["one"], t["one_no_guess"]))
    results[0]["draft_tokens"] = exp.draft_tokens() is not None
    results[0]["expand_no_pick_ms"] = 1000 * statistics.median(t["one_no_pick"])
    results[0]["expand_no_pick_over_1"] = statistics.median(c / o for c, o in zip(t["one_no_pick"], t["one"]))
    for name in ("contrast", "contrast_words", "candidates", "pick_words"):
        results[0][name] = getattr(exp.meta, name)
    if "one_graphs" in t:
        results[0]["expand_call_graphs_ms"] = 1000 * statistics.median(t["one_graphs"])
        results[0]["expand_many8_graphs_ms"] = 1000 * statistics.median(t["eight_graphs"])
    if not args.skip_small:
        from prompt_expander.expansion.vocab import VocabInfo
        # GPT-2 small exactly (124M, 50257 rows in the head); rows past our tokenizer are never sampled.
        small = random_gpt2_small(GPT2_VOCAB, device, exp.model.dtype)
        small.config.eos_token_id = exp.vocab.eos_id
        results.append(bench_model("random GPT-2 small (12x768, 50257 vocabulary)", small,
                                   VocabInfo(exp.tokenizer, GPT2_VOCAB), context, max(3, args.repeats // 2), sync,
                                   args.cuda_graphs))
    for r in results:
        print(f"{r['model']} ({r['params_M']}M, {r['device']}, {r['dtype']}), {NEW_TOKENS} new tokens:")
        for n in (1, 8):
            print(f"  batch {n}: ours {r[f'ours_b{n}_ms']:.1f} ms, stock generate() {r[f'stock_b{n}_ms']:.1f} ms, "
                  f"speed-up x{r[f'speedup_b{n}']:.2f}")
            if f"graphs_b{n}_ms" in r:
                print(f"  batch {n} with CUDA graphs: {r[f'graphs_b{n}_ms']:.1f} ms (x{r[f'graphs_speedup_b{n}']:.2f} "
                      f"over ours without), graph memory {r[f'graph_memory_b{n}_mb']:.1f} MB"
                      + (f"; graphs turned off: {r['graphs_disabled']}" if r.get("graphs_disabled") else ""))
        print(f"  8 variations / 1 expansion (ours): x{r['ours_8_over_1']:.2f}")
        if "expand_call_ms" in r:
            if r.get("draft_tokens"):
                print(f"  full expand() call without the draft table's guesses: {r['expand_no_guess_ms']:.1f} ms "
                      f"(with them x{r['expand_guess_over_no_guess']:.2f})")
            print(f"  full expand() call ({own_settings(r)}): {r['expand_call_ms']:.1f} ms "
                  f"(x{r['expand_over_stock_b1']:.2f} of stock generate() at batch 1); without the pick: "
                  f"{r['expand_no_pick_ms']:.1f} ms (x{r['expand_no_pick_over_1']:.2f}); with neither pick nor "
                  f"contrast: {r['expand_call_plain_ms']:.1f} ms; expand_many(8): {r['expand_many8_ms']:.1f} ms "
                  f"(x{r['expand_many8_over_1']:.2f}); 4 candidates: {r['expand_candidates4_ms']:.1f} ms "
                  f"(x{r['expand_candidates4_over_1']:.2f})")
        if "expand_call_graphs_ms" in r:
            print(f"  with CUDA graphs: expand() {r['expand_call_graphs_ms']:.1f} ms; "
                  f"expand_many(8) {r['expand_many8_graphs_ms']:.1f} ms")
    if args.json:
        write_json_atomic(args.json, results)
    return results


if __name__ == "__main__":
    main()
