"""`evaluate`: cross-entropy, perplexity and bits per byte of a model on a prompts file, streamed."""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from ..errors import DataError
from ..fileio import iter_lines, write_json_atomic, write_text_atomic
from .scoring import evaluate_lines


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompts", help="prompts file (.txt or .txt.gz, one per line), streamed")
    p.add_argument("--model", default=None, help="model folder or hub id (default: models/default); LSTM folders work too")
    p.add_argument("--lora", action="append", default=[], help="adapter NAME or PATH[:WEIGHT]; repeatable")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--limit", type=int, default=0, help="score only the first N prompts")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="write the metrics as JSON here")
    p.add_argument("--markdown", help="write a one-row Markdown table here")


def evaluate_path(model_path, prompts, loras=(), batch_size=64, limit=0, device="cpu", progress=True) -> dict:
    from .lstm import is_lstm_folder, load_lstm

    lines = iter_lines(prompts, strict=True)
    if limit:
        lines = itertools.islice(lines, limit)
    if model_path and is_lstm_folder(model_path):
        lstm = load_lstm(model_path, device)
        result = lstm.evaluate_lines(lines, batch_size=batch_size, progress=progress)
        result["model"] = result["system"] = str(model_path)
        return result
    from ..expansion.resident import load_expander

    exp = load_expander(model_path, device=device, dtype="fp32")
    model = exp.model_for_style(exp.parse_styles(loras))
    result = evaluate_lines(model, exp.tokenizer, exp.meta, lines, batch_size, progress)
    result["model"] = exp.model_id
    result["loras"] = list(loras)
    result["system"] = " + ".join([exp.model_id, *map(str, loras)])  # what was scored: the base and its styles
    return result


def main(args) -> int:
    if not Path(args.prompts).is_file():
        raise DataError(f"{args.prompts}: no such file")
    r = evaluate_path(args.model, args.prompts, args.lora, args.batch_size, args.limit, args.device)
    print(f"model {r['system']}  prompts {r['prompts']}  tokens {r['tokens']}")
    print(f"cross-entropy {r['cross_entropy']:.4f}  perplexity {r['perplexity']:.2f}  bits/byte {r['bits_per_byte']:.4f}")
    if args.json:
        write_json_atomic(args.json, r)
    if args.markdown:
        write_text_atomic(args.markdown, "| model | CE | PPL | bits/byte | prompts | tokens |\n|---|---:|---:|---:|---:|---:|\n"
                          f"| {r['system']} | {r['cross_entropy']:.4f} | {r['perplexity']:.2f} | {r['bits_per_byte']:.4f} "
                          f"| {r['prompts']} | {r['tokens']} |\n")
    return 0
