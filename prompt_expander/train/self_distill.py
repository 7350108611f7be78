"""`self-distill`: training prompts written by the model itself, each its most on-topic of K samples, for train-lora."""
from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

from ..errors import DataError, InputError
from ..fileio import iter_lines, read_json, write_json_atomic, write_lines_atomic
from .dataset import prompts_file
from .on_topic_subset import MAX_SUBJECT_WORDS, modifier_subjects

MAX_SENTENCE_WORDS = 14
SENTENCE_EVERY = 3  # one subject in three is a sentence ("a dog chasing a ball in the park"), as users type both
PART_SIZE = 250  # prompts per part file: a kill loses at most one part's work
VAL_SHARE = 0.05
SYNTAX_CHARACTERS = set("()[]{}<>:|\\")  # weights and wildcards belong to users, not to training subjects
RUN_FILE = "self_distill.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="prompts file, or a `prepare` folder (its train.txt); first phrases are the subjects")
    p.add_argument("--out", required=True, help="output folder: train.txt and val.txt for train-lora")
    p.add_argument("--model", default=None, help="model folder or hub id (default models/default)")
    p.add_argument("--lora", action="append", default=[], help="adapter NAME[:WEIGHT] to expand with; repeatable")
    p.add_argument("--subjects", type=_positive, default=3000, help="how many subjects to expand (default 3000)")
    p.add_argument("--candidates", type=_positive, default=8,
                   help="samples per subject; the most on-topic one is kept (default 8)")
    p.add_argument("--exclude", action="append", default=[],
                   help="a file of inputs (one per line) never to use as subjects, e.g. the evaluation's; repeatable")
    p.add_argument("--seed", type=int, default=0, help="orders the subjects and seeds the expansions")
    p.add_argument("--batch", type=_positive, default=1,
                   help="subjects decoded together (default 1: each line is exactly what `expand` gives). More is "
                        "faster, on a GPU by far, and a line can then differ from `expand`'s by float rounding")
    p.add_argument("--minutes", type=_positive_minutes, default=0.0,
                   help="stop after about this many minutes, at the end of a part whose successor would not fit, "
                        "and write train.txt and val.txt from the parts done (the same command later continues)")


def _positive_number(kind, what: str):
    """An argparse type: `kind` (int or float) above 0, else an error saying what is wanted."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value
    return parse


_positive = _positive_number(int, "a whole number of 1 or more")
_positive_minutes = _positive_number(float, "a positive number of minutes")


def subject_of(line: str) -> str | None:
    """A prompt's first comma phrase when it can be an expander's input: 1 to MAX_SUBJECT_WORDS words (a
    subject) or up to MAX_SENTENCE_WORDS (a sentence), with nothing after it missing and no prompt syntax."""
    subject, comma, rest = line.partition(",")
    subject = " ".join(subject.split())
    if not comma or not rest.strip() or not subject or SYNTAX_CHARACTERS & set(subject):
        return None
    return subject if len(subject.split()) <= MAX_SENTENCE_WORDS else None


def choose_subjects(path, n: int, seed: int, exclude: set[str]) -> list[str]:
    """n distinct subjects of the file, in a seeded order, SENTENCE_EVERY-th a sentence and the others short;
    first phrases that are styles rather than subjects (modifier_subjects) are left out."""
    styles = modifier_subjects(path)
    short: dict[str, str] = {}
    sentences: dict[str, str] = {}
    for line in iter_lines(path):
        subject = subject_of(line)
        key = subject.lower() if subject else None
        if key is None or key in styles or key in exclude:
            continue
        (short if len(key.split()) <= MAX_SUBJECT_WORDS else sentences).setdefault(key, subject)
    rng = random.Random(seed)
    short_list, sentence_list = sorted(short.values()), sorted(sentences.values())
    rng.shuffle(short_list)
    rng.shuffle(sentence_list)
    chosen = []
    while len(chosen) < n and (short_list or sentence_list):
        want_sentence = len(chosen) % SENTENCE_EVERY == SENTENCE_EVERY - 1
        pool = sentence_list if (want_sentence and sentence_list) or not short_list else short_list
        chosen.append(pool.pop())
    return chosen


def _run_subjects(out: Path, args, data: Path) -> list[str]:
    """The run's subjects, chosen once: a rerun into the same OUT with the same settings continues where the last
    one stopped; other settings there are refused, since the parts already written would not match them."""
    settings = {"data": str(data.resolve()), "data_bytes": data.stat().st_size, "subjects": args.subjects,
                "seed": args.seed, "candidates": args.candidates, "batch": args.batch, "model": args.model or "default",
                "lora": list(args.lora), "exclude": sorted(str(Path(f).resolve()) for f in args.exclude)}
    recorded = out / RUN_FILE
    listed = out / "subjects.txt"
    if recorded.exists() and listed.exists():
        if read_json(recorded) != settings:
            raise DataError(f"{out} holds a self-distill run with other settings ({recorded}); use a new --out")
        return listed.read_text(encoding="utf-8").splitlines()
    exclude = {line.strip().lower() for f in args.exclude for line in iter_lines(f)}
    subjects = choose_subjects(data, args.subjects, args.seed, exclude)
    if not subjects:
        raise DataError(f"no prompt of {data} opens with a subject of 1 to {MAX_SENTENCE_WORDS} words and a comma")
    write_lines_atomic(listed, subjects)
    write_json_atomic(recorded, settings)
    return subjects


def _expand_group(exp, subjects: list[str], seed: int, args):
    """The subjects expanded in one decode (Expander.expand_subjects), or None if the guard refuses one."""
    try:
        return exp.expand_subjects(subjects, seed=seed, candidates=args.candidates, pick_words=0, styles=args.lora)
    except InputError:
        return None


def main(args) -> int:
    from tqdm import tqdm

    from ..expansion.expander import make_settings
    from ..expansion.resident import load_expander
    from ..limits import MAX_ROWS

    data = prompts_file(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    exp = load_expander(args.model)
    # Settings or styles the expander refuses would refuse every subject, so they stop the run here instead.
    make_settings(candidates=args.candidates)  # the pick is by whole additions (pick_words=0), whatever the card
    exp.parse_styles(args.lora)
    if args.batch > 1 and args.batch * args.candidates > MAX_ROWS:
        raise DataError(f"--batch {args.batch} x --candidates {args.candidates} is over {MAX_ROWS} rows a decode")
    subjects = _run_subjects(out, args, data)
    parts = out / "parts"
    parts.mkdir(exist_ok=True)
    bar = tqdm(total=len(subjects), desc="self-distill", unit="subject")
    started, slowest_part = time.monotonic(), 0.0
    for start in range(0, len(subjects), PART_SIZE):
        part = parts / f"{start:07d}.txt"
        if part.exists():  # written whole by an earlier run
            bar.update(min(PART_SIZE, len(subjects) - start))
            continue
        if args.minutes and time.monotonic() - started + slowest_part > args.minutes * 60:
            bar.write(f"stopping at subject {start} of {len(subjects)}: the next part would pass {args.minutes} "
                      "min; the same command continues the run")
            break
        part_started = time.monotonic()
        lines = []
        end = min(start + PART_SIZE, len(subjects))
        for first in range(start, end, args.batch):
            group = subjects[first:min(first + args.batch, end)]
            results = _expand_group(exp, group, args.seed + first, args) if args.batch > 1 else None
            if results is None:  # one by one: --batch 1, or a group with a subject the prompt guard refuses
                results = []
                for i, subject in enumerate(group, first):
                    try:
                        results.append(exp.expand(subject, seed=args.seed + i, candidates=args.candidates,
                                                  pick_words=0, styles=args.lora))
                    except InputError:  # such a subject is no loss
                        continue
            lines += [" ".join(result.text.split()) for result in results if result.added]
            bar.update(len(group))
        write_lines_atomic(part, lines)
        slowest_part = max(slowest_part, time.monotonic() - part_started)
    bar.close()
    prompts = [line for part in sorted(parts.glob("*.txt")) for line in iter_lines(part)]
    n_val = max(1, round(len(prompts) * VAL_SHARE)) if len(prompts) > 1 else 0
    write_lines_atomic(out / "train.txt", prompts[:len(prompts) - n_val])
    write_lines_atomic(out / "val.txt", prompts[len(prompts) - n_val:])
    print(f"{len(prompts) - n_val} train and {n_val} val prompts in {out}; next: "
          f"python -m prompt_expander train-lora {out} --base {args.model or 'default'} --out ADAPTER")
    return 0
