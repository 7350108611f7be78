"""`expand`: expand one prompt, its variations, or a whole file of prompts to JSONL."""
from __future__ import annotations

import argparse
import json
import sys

from .errors import InputError
from .fileio import atomic_path, iter_lines


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", nargs="?", help="the prompt to expand (omit with --input)")
    p.add_argument("--seed", type=int, default=0, help="expansion seed (any integer; default 0)")
    p.add_argument("--variations", type=int, default=1, help="make N variations with seeds SEED..SEED+N-1")
    p.add_argument("--model", help="model folder or hub id (default: the bundled models/default)")
    p.add_argument("--lora", action="append", default=[], metavar="NAME[:WEIGHT]",
                   help="style adapter from models/loras or a folder, optionally weighted; repeat to mix")
    p.add_argument("--temperature", type=float, default=0.8, help="creativity; <= 0 is greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=50, help="sample from the k likeliest tokens; 0 = off (default 50)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass in (0, 1] (default 0.95)")
    p.add_argument("--contrast", type=float, default=0.0, metavar="LAMBDA",
                   help="concept-contrastive decoding, 0 (off, default) to 2: favour words the prompt makes likelier "
                        "than they are with no prompt, over generic filler")
    p.add_argument("--max-tokens", type=int, default=0,
                   help="CLIP tokens the expansion may add; 0 fills the current 75-token chunk (default)")
    p.add_argument("--no-safe", action="store_true", help="allow NSFW words to be added (never censors your words)")
    p.add_argument("--blocklist", default="", help="comma-separated words/artists never to add, or @FILE")
    p.add_argument("--negative", action="store_true", help="expand a negative prompt (models that support it)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto (default cpu)")
    p.add_argument("--dtype", default="auto", help="auto, fp32, fp16, bf16")
    p.add_argument("--reference", action="store_true", help="decode with stock transformers generate()")
    p.add_argument("--json", action="store_true", help="print the full result objects as JSON")
    p.add_argument("--input", help="file of prompts, one per line (batch mode)")
    p.add_argument("--output", help="JSONL file for batch mode results (written atomically)")


def _settings(args) -> dict:
    blocklist = args.blocklist
    if blocklist.startswith("@"):
        with open(blocklist[1:], encoding="utf-8") as f:
            blocklist = f.read()
    return dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, budget=args.max_tokens,
                contrast=args.contrast,
                safe_mode=not args.no_safe, blocklist=blocklist, negative=args.negative, fast=not args.reference)


def main(args) -> int:
    from tqdm import tqdm

    from .loading import load_expander

    if args.input and args.text:
        raise InputError("give either TEXT or --input FILE, not both")
    if not args.input and args.text is None:
        raise InputError("nothing to expand: give TEXT or --input FILE")
    exp = load_expander(args.model, args.device, args.dtype)
    settings = _settings(args)
    if not args.input:
        results = exp.expand_many(args.text, args.variations, args.seed, styles=args.lora, **settings)
        for r in results:
            print(json.dumps(r.to_dict(), ensure_ascii=False) if args.json else r.text)
        return 0
    prompts = list(iter_lines(args.input))
    failures = 0
    with atomic_path(args.output or args.input + ".expanded.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as f:
        for line in tqdm(prompts, desc="expand", unit=" prompts", file=sys.stderr):
            try:
                results = exp.expand_many(line, args.variations, args.seed, styles=args.lora, **settings)
                for r in results:
                    f.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
            except InputError as e:
                failures += 1
                f.write(json.dumps({"original": line, "error": str(e)}, ensure_ascii=False) + "\n")
    print(f"wrote {args.output or args.input + '.expanded.jsonl'} ({len(prompts)} prompts, {failures} errors)",
          file=sys.stderr)
    return 0
