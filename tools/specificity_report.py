"""Write docs/specificity.md from expand-eval and evaluate JSON files: how specific to their subject the
additions of each model and decoding are, against the human reference."""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prompt_expander.fileio import write_text_atomic  # noqa: E402

INPUTS = {"imagenet100": "imagenet_classes (first 100)", "simple_animals": "simple_animals (45)",
          "parti200": "partiprompts (first 200)",
          "people500": "people's own subjects (the first 500 validation prompts that open with one)"}
COMMANDS = [
    "python -m prompt_expander expand-eval INPUTS --model MODEL --seeds 3 --limit 200 --contrast LAMBDA "
    "--known-words runs/data/train.txt --json runs/eval/MODEL-LAMBDA-INPUTS.json   "
    "# one of them with --reference-prompts runs/data/val.txt",
    "python -m prompt_expander expand-eval runs/data/val.txt --subjects --limit 500 --model MODEL --seeds 3 "
    "--contrast LAMBDA --known-words runs/data/train.txt --json runs/eval/MODEL-LAMBDA-people500.json   "
    "# people's own subjects, with their figures",
]
COMMANDS_HEADING = "## Commands"


def hand_written_sections(old: str, generated: set[str]) -> list[str]:
    """The sections of the old doc that this tool does not write (analysis added by hand), in order."""
    kept, keep = [], False
    for line in old.splitlines():
        if line.startswith("## "):
            keep = line not in generated
        if keep:
            kept.append(line)
    return kept


def fmt(v, digits=3):
    return "n/a" if v is None else f"{v:.{digits}f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", default="runs/eval", help="folder of NAME-LAMBDA-INPUTS.json and NAME-val.json files")
    p.add_argument("--system", action="append", required=True, metavar="NAME=DESCRIPTION")
    p.add_argument("--machine", required=True)
    p.add_argument("--out", default="docs/specificity.md")
    args = p.parse_args()
    runs = Path(args.runs)
    rows, human = [], (None, None)
    for spec in args.system:
        name, _, desc = spec.partition("=")
        val = runs / f"{name}-val.json"
        bpb = json.loads(val.read_text())["bits_per_byte"] if val.is_file() else None
        for f in sorted(runs.glob(f"{name}-*-*.json")):
            m = re.fullmatch(r"([\d.]+)-(\w+)", f.stem[len(name) + 1:])
            if m is None or m.group(2) not in INPUTS:  # another system whose name starts with this one's
                continue
            lam, inputs = m.groups()
            r = json.loads(f.read_text())
            if r.get("human_specificity") is not None:  # one run per report computes it (same val split)
                human = (r["human_specificity"], r.get("human_on_topic_matched"))
            rows.append((inputs, desc, float(lam), r, bpb))
    lines = ["# Specificity: is the added text about its own subject?", "",
             "Measured on the 2-vCPU machine with `expand-eval`, 3 seeds per input, all-MiniLM-L6-v2 embeddings "
             f"(the judge; the expansion path never loads it). Machine: {args.machine}.", "",
             "- **specificity**: cos(input, its own added text) minus the mean cos(other inputs, that added text); "
             "the added part is embedded alone.",
             "- **on-topic, 12 words**: cos(input, input + the first 12 added words), so lengths compare fairly.",
             "- **neighbour_list_rate**: the share of additions with 4 or more modifiers of 1-2 words that the judge "
             "puts within cosine 0.4 of the input, i.e. lists of things like the subject, which raise specificity "
             "without describing it. People's prompts: 0.012.",
             "- **human**: the same two figures for real validation prompts whose first comma segment has 1-3 words "
             "(the subject is the input, the rest the added text): the goal is at least this.",
             "- **bits/byte**: held-out bits per byte on the first 5,000 prompts of the (mended) validation split.",
             "- **contrast**: λ of concept-contrastive decoding (`--contrast`), 0 = off.", ""]
    for inputs, title in INPUTS.items():
        sel = [r for r in rows if r[0] == inputs]
        if not sel:
            continue
        hs, ho = human
        lines += [f"## {title}", "",
                  "| model | contrast | specificity | on-topic, 12 words | words added | distinct-2 | junk | ms / expansion | bits/byte |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for _, desc, lam, r, bpb in sorted(sel, key=lambda x: (x[1], x[2])):
            lines.append(f"| {desc} | {lam:g} | {fmt(r.get('specificity'))} | {fmt(r.get('on_topic_matched'))} | "
                         f"{r['added_words_mean']:.1f} | {r['distinct_2']:.3f} | {fmt(r.get('junk_rate'))} | "
                         f"{r['ms_per_expansion']:.0f} | {fmt(bpb)} |")
        lines += [f"| **human reference** | | **{fmt(hs)}** | **{fmt(ho)}** | | | | | |", ""]
    out = ROOT / args.out
    if out.is_file():  # sections written by hand (analysis, plans) stay, before the commands
        generated = {f"## {title}" for title in INPUTS.values()} | {COMMANDS_HEADING}
        lines += hand_written_sections(out.read_text(encoding="utf-8"), generated)
        if lines[-1] != "":
            lines.append("")
    lines += [COMMANDS_HEADING, "", "```", *COMMANDS,
              "python -m prompt_expander evaluate runs/data/val.txt --model MODEL --limit 5000 --json runs/eval/MODEL-val.json",
              "python tools/specificity_report.py --system NAME=DESCRIPTION ... --machine '...'", "```", ""]
    write_text_atomic(out, "\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
