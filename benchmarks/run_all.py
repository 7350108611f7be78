"""Run every benchmark: decode speed vs stock generate(), load/warm/RSS, training throughput vs HF Trainer."""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_decode  # noqa: E402
import bench_load  # noqa: E402
import bench_train  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prompt_expander.fileio import write_text_atomic  # noqa: E402
from prompt_expander.model.loading import cpu_has_native_bf16  # noqa: E402

KEPT = "## Against the targets"


def write_doc(path: Path, decode, load, train, machine: str) -> None:
    """Rewrite the measured part of the doc; the hand-written analysis from KEPT on is kept as it is."""
    rows = []
    for r in decode:
        for n in (1, 8):
            rows.append(f"| {r['model']} ({r['params_M']}M) | {r['device']} {r['dtype']} | batch {n}, 60 new tokens | "
                        f"{r[f'ours_b{n}_ms']:.1f} ms | {r[f'stock_b{n}_ms']:.1f} ms | x{r[f'speedup_b{n}']:.2f} |")
    graph_rows = []
    for r in decode:
        for n in (1, 8):
            if f"graphs_b{n}_ms" in r:
                off = f" (turned off: {r['graphs_disabled']})" if r.get("graphs_disabled") else ""
                graph_rows.append(f"| {r['model']} ({r['params_M']}M) | {r['device']} {r['dtype']} | batch {n} | "
                                  f"{r[f'graphs_b{n}_ms']:.1f} ms{off} | {r[f'ours_b{n}_ms']:.1f} ms | "
                                  f"{r[f'graph_memory_b{n}_mb']:.1f} MB |")
    graph_table = "" if not graph_rows else f"""
## CUDA graphs (opt-in: `PROMPT_EXPANDER_CUDA_GRAPHS=1`)

| model | device | work | with graphs | without | graph memory |
|---|---|---|---:|---:|---:|
{chr(10).join(graph_rows)}
""" + "".join(f"\n- A full `expand()` call with graphs, {r['device']} {r['dtype']}: {r['expand_call_graphs_ms']:.1f} ms; "
              f"`expand_many(8)`: {r['expand_many8_graphs_ms']:.1f} ms." for r in decode if "expand_call_graphs_ms" in r) + "\n"
    d0 = decode[0]
    # What a user waits for: context, decode with the CLIP budget, clean-up, at the model's own settings.
    expand_lines = [
        f"- A full `expand()` call on the default model, {r['device']} {r['dtype']} (context, decode, clean-up, CLIP "
        f"count; the model's own settings: {bench_decode.own_settings(r)}): {r['expand_call_ms']:.1f} ms"
        + (f" (x{r['expand_over_stock_b1']:.2f} of stock `generate()` at batch 1 in the same run)"
           if "expand_over_stock_b1" in r else "") + "; without "
        f"the pick (`candidates=1`): {r['expand_no_pick_ms']:.1f} ms (x{r['expand_no_pick_over_1']:.2f}); with "
        f"neither pick nor contrast: {r['expand_call_plain_ms']:.1f} ms; `expand_many(8)`: "
        f"{r['expand_many8_ms']:.1f} ms (x{r['expand_many8_over_1']:.2f}, median of per-round ratios); 4 "
        f"candidates (`candidates=4`): {r['expand_candidates4_ms']:.1f} ms (x{r['expand_candidates4_over_1']:.2f})."
        + (f" Without the draft table's guesses (every token its own step): {r['expand_no_guess_ms']:.1f} ms "
           f"(with them x{r['expand_guess_over_no_guess']:.2f})." if r.get("draft_tokens") else "")
        for r in decode if "expand_call_ms" in r]
    gpu_note = "" if any(r["device"].startswith("cuda") for r in decode) else (
        " No GPU was used, so there are no GPU figures;\n`python benchmarks/run_all.py --device cuda` adds them "
        "(fp32 and fp16) where one is present.")
    text = f"""# Benchmarks

Machine: {machine}.{gpu_note}
Reproduce: `python benchmarks/run_all.py --out runs/bench`. Ours and stock `generate()` run on the same weights in
the same process, with the same sampling settings (temperature 0.8, top-k 50, top-p 0.95, exactly 60 new
tokens), in alternating rounds; times are medians over the rounds, speed-ups medians of per-round ratios.

## Decoding: our KV-cache loop vs stock transformers `generate()`

| model | device | work | ours | stock generate() | speed-up |
|---|---|---|---:|---:|---:|
{chr(10).join(rows)}

- 8 variations vs 1 expansion, ours: x{d0['ours_8_over_1']:.2f} (default model, {d0['device']} {d0['dtype']}).
{chr(10).join(expand_lines)}
{graph_table}
## Loading (default model)

- cold load, imports excluded (the host has torch/transformers loaded): {load['cold_s'] * 1000:.0f} ms
- warm `load_expander()` call (a dict lookup and a stat of the folder's files): {load['warm_us']:.1f} µs; bytes read
  by 200 warm calls (`rchar` of `/proc/self/io`): {load['warm_bytes_read_200_calls']:.0f}
- resident memory (RSS) added by loading the model, its code already imported: {load['rss_added_mb']:.0f} MB;
  {load['rss_after_expand_mb']:.0f} MB after the first expansion (the decode loop's weight copies, torch's
  thread and allocator state) and {load['rss_after_variations_mb']:.0f} MB after the first 8 variations (oneDNN's
  pre-packed weights and kernels)

## Training throughput (train-base loop vs Hugging Face `Trainer`)

Same GPT-2 config ({train['n_layer']} layers, {train['n_embd']} wide, vocabulary {train['vocab']}), same batches
({train['batch']} x {train['seq']} tokens), {train['precision']}, steady state after {train['warmup_steps']} steps:
ours {train['ours_tok_s']:,.0f} tokens/s, `Trainer` {train['hf_trainer_tok_s']:,.0f} tokens/s (x{train['ratio']:.2f}).
"""
    old = path.read_text() if path.exists() else ""
    if KEPT in old:
        text += "\n" + old[old.index(KEPT):]
    write_text_atomic(path, text)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="runs/bench", help="folder for the JSON results")
    ap.add_argument("--doc", default="docs/benchmarks.md", help="write the results table here ('' to skip)")
    ap.add_argument("--skip-train", action="store_true", help="reuse OUT/train.json instead of the training benchmark")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("== decode ==")
    graphs = ["--cuda-graphs"] if args.device == "cuda" else []
    decode = bench_decode.main(["--device", args.device, "--json", str(out / "decode.json"), *graphs])
    if args.device == "cuda":
        decode += bench_decode.main(["--device", "cuda", "--dtype", "fp16", "--json", str(out / "decode_fp16.json"),
                                     *graphs])
    elif cpu_has_native_bf16():  # what `auto` loads the default in here (its card's cpu_dtype)
        decode += bench_decode.main(["--device", args.device, "--dtype", "bf16", "--skip-small",
                                     "--json", str(out / "decode_bf16.json")])
    print("== load ==")
    load = bench_load.main(["--json", str(out / "load.json")])
    print("== training ==")
    train = bench_train.main(["--json", str(out / "train.json")]) if not args.skip_train else \
        json.loads((out / "train.json").read_text())
    if args.doc:
        from prompt_expander.train.loop import machine_description
        write_doc(Path(args.doc), decode, load, train, machine_description())
        print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
