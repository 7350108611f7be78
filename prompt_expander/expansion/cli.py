"""`expand`: expand one prompt, its variations, or a whole file of prompts to JSONL."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import InputError
from ..fileio import atomic_path
from ..limits import MAX_CANDIDATES, MAX_TEXT_CHARS, MAX_VARIATIONS, check_text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", nargs="?", help="the prompt to expand (omit with --input)")
    p.add_argument("--seed", type=int, default=0, help="expansion seed (any integer; default 0)")
    p.add_argument("--variations", type=int, default=1,
                   help=f"make N variations with seeds SEED..SEED+N-1 (at most {MAX_VARIATIONS})")
    p.add_argument("--model", help="model folder or hub id (default: the bundled models/default)")
    p.add_argument("--lora", action="append", default=[], metavar="NAME[:WEIGHT]",
                   help="style adapter from models/loras or a folder, optionally weighted; repeat to mix")
    p.add_argument("--temperature", type=float, default=0.8, help="creativity; <= 0 is greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=50, help="sample from the k likeliest tokens; 0 = off (default 50)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass in (0, 1] (default 0.95)")
    p.add_argument("--contrast", type=float, default=None, metavar="LAMBDA",
                   help="concept-contrastive decoding, 0 (off) to 2: favour words the prompt makes likelier than they "
                        "are with no prompt, over generic filler (default: the model's own; 1.0 for the shipped one)")
    p.add_argument("--contrast-words", type=int, default=None, metavar="N",
                   help="contrast chooses the addition's first N words and the model alone the rest: nearly the "
                        "same specificity, a faster decode on a CPU; 0 = every word (default: the model's own)")
    p.add_argument("--candidates", type=int, default=None, metavar="K",
                   help=f"sample K additions and keep the one closest to the prompt's words, 1 (off) to "
                        f"{MAX_CANDIDATES}: more on-topic, about K times the decode work (default: the model's own)")
    p.add_argument("--pick-words", type=int, default=None, metavar="N",
                   help="with --candidates K: pick by each candidate's first N words and decode only the chosen one "
                        "further (20 at 8 candidates: nearly as on-topic as the whole pick, for about 1.7 times one "
                        "expansion's time against 2.7); "
                        "0 = decode all K to the end (default: the model's own)")
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


def _read_word_file(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--blocklist @{path}: " + ("is a directory, not a file" if p.is_dir() else "no such file"))
    try:
        return p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"--blocklist @{path}: not UTF-8 text (a bad byte at offset {e.start})") from None
    except OSError as e:
        raise InputError(f"--blocklist @{path}: cannot read it ({e.strerror})") from None


def _settings(args) -> dict:
    blocklist = args.blocklist
    if blocklist.startswith("@"):
        blocklist = _read_word_file(blocklist[1:])
    return dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, budget=args.max_tokens,
                contrast=args.contrast, contrast_words=args.contrast_words, candidates=args.candidates,
                pick_words=args.pick_words, safe_mode=not args.no_safe, blocklist=blocklist, negative=args.negative,
                fast=not args.reference)


def _check_paths(args) -> Path:
    """Every mistake in the file arguments is found before the model loads or any prompt is expanded."""
    src = Path(args.input)
    if not src.exists():
        raise InputError(f"--input {args.input}: no such file")
    if src.is_dir():
        raise InputError(f"--input {args.input}: is a directory, not a file of prompts")
    out = Path(args.output or args.input + ".expanded.jsonl")
    if out.is_dir():
        raise InputError(f"--output {out}: is a directory; give a file name for the JSONL results")
    if out.parent.exists() and not out.parent.is_dir():
        raise InputError(f"--output {out}: {out.parent} is not a directory")
    return out


def iter_prompt_lines(path: Path, max_chars: int = MAX_TEXT_CHARS):
    """(line number, text or None, note) for each non-blank line, streamed with bounded memory.

    A line over max_chars is cut to it (note says so) and the rest of it skipped unread into memory; a line
    that is not UTF-8 gives text None and a note, so that one bad line does not cost the others."""
    limit = 4 * max_chars + 1  # UTF-8 takes at most 4 bytes a character
    with open(path, "rb") as f:
        number = 0
        while True:
            raw = f.readline(limit)
            if not raw:
                return
            number += 1
            note = None
            if not raw.endswith(b"\n") and len(raw) == limit:
                while True:  # skip the rest of an over-long line in bounded chunks
                    rest = f.readline(1 << 20)
                    if not rest or rest.endswith(b"\n"):
                        break
                note = f"line {number} is over {max_chars:,} characters; cut to the first {max_chars:,}"
            try:
                text = raw.decode("utf-8", errors="strict" if note is None else "ignore").rstrip("\r\n")
            except UnicodeDecodeError as e:
                yield number, None, f"line {number} is not UTF-8 text (a bad byte at offset {e.start})"
                continue
            if len(text) > max_chars:
                text = text[:max_chars]
                note = note or f"line {number} is over {max_chars:,} characters; cut to the first {max_chars:,}"
            if text.strip():
                yield number, text, note


def main(args) -> int:
    from tqdm import tqdm

    from .resident import load_expander

    if args.input and args.text:
        raise InputError("give either TEXT or --input FILE, not both")
    if not args.input and args.text is None:
        raise InputError("nothing to expand: give TEXT or --input FILE")
    if not 1 <= args.variations <= MAX_VARIATIONS:
        raise InputError(f"--variations must be from 1 to {MAX_VARIATIONS}, got {args.variations}")
    if args.input:
        out = _check_paths(args)
    else:
        check_text(args.text)
    settings = _settings(args)
    exp = load_expander(args.model, args.device, args.dtype)
    if not args.input:
        results = exp.expand_many(args.text, args.variations, args.seed, styles=args.lora, **settings)
        for r in results:
            print(json.dumps(r.to_dict(), ensure_ascii=False) if args.json else r.text)
        return 0
    prompts = failures = 0
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for number, line, note in tqdm(iter_prompt_lines(Path(args.input)), desc="expand", unit=" prompts",
                                       file=sys.stderr):
            prompts += 1
            if note:
                tqdm.write(f"warning: {args.input}: {note}", file=sys.stderr)
            if line is None:
                failures += 1
                f.write(json.dumps({"line": number, "error": note}, ensure_ascii=False) + "\n")
                continue
            try:
                results = exp.expand_many(line, args.variations, args.seed, styles=args.lora, **settings)
                for r in results:
                    f.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
            except InputError as e:
                failures += 1
                f.write(json.dumps({"line": number, "original": line, "error": str(e)}, ensure_ascii=False) + "\n")
    print(f"wrote {out} ({prompts} prompts, {failures} errors)", file=sys.stderr)
    return 0
