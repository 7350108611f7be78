"""Write docs/evaluation.md: validation CE/PPL/bits-per-byte of every shipped system, and expand-eval figures."""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prompt_expander.fileio import write_text_atomic  # noqa: E402


# The default and each bundled style, with the options that pick the style.
SYSTEMS = [("default", []), ("default + photo", ["--lora", "photo"]), ("default + anime", ["--lora", "anime"]),
           ("default + on-topic", ["--lora", "on-topic"])]


def run(args: list[str], out_json: Path, reuse: bool = False) -> dict:
    """The command's JSON result; with `reuse`, the one an earlier run left in out_json, when there is one."""
    if reuse and out_json.is_file():
        return json.loads(out_json.read_text())
    cmd = [sys.executable, "-m", "prompt_expander", *args, "--json", str(out_json)]
    print("+", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return json.loads(out_json.read_text())


def lstm_budget_note(lstm_dirs) -> list[str]:
    """Say how long the LSTM benchmarks trained next to the default model, from their training summaries."""
    runs = []
    for d in lstm_dirs:
        summary = ROOT / d / "training_summary.json"
        if summary.is_file():
            runs.append((Path(d).name, json.loads(summary.read_text())))
    if not runs:
        return []
    default = json.loads((ROOT / "models" / "default" / "training_summary.json").read_text())
    budgets = ", ".join(f"{name}: {r['step']} steps, {r['tokens_seen'] / 1e6:.2f}M tokens" for name, r in runs)
    still_falling = all(len(r.get("history", [])) >= 2 and r["history"][-1]["val_loss"] < r["history"][-2]["val_loss"]
                        for _, r in runs)
    return [f"The LSTM benchmarks had a small training budget ({budgets}), against the default GPT-2's "
            f"{default['tokens_seen'] / 1e6:.1f}M tokens. "
            + ("Their validation loss was still falling when they stopped, so these rows bound the LSTM from "
               "above rather than measure a converged one; `train-lstm` with more `--steps` gives the fair "
               "comparison." if still_falling else ""), ""]


EXPAND_EVAL_HEADING = "## expand-eval on"
COMMANDS_HEADING = "## Commands"
EXPAND_EVAL_KEYS = ["retention", "added_words_mean", "added_words_p5", "added_words_p95", "on_topic_similarity",
                    "reference_similarity", "specificity", "on_topic_matched", "human_specificity",
                    "human_on_topic_matched", "neighbour_list_rate", "human_neighbour_list_rate", "distinct_1",
                    "distinct_2", "pairwise_embedding_similarity", "pairwise_word_overlap", "repeated_modifier_rate",
                    "nsfw_added_rate", "budget_overrun_rate", "junk_rate", "ms_per_expansion"]


def expand_eval_section(ee, args) -> list[str]:
    lines = [f"{EXPAND_EVAL_HEADING} `{args.inputs}` (first {args.limit} inputs, {args.seeds} seeds each)", "",
             f"Measured on {time.strftime('%Y-%m-%d')}.", "",
             "| metric | " + " | ".join(n for n, _ in ee) + " |", "|---|" + "---:|" * len(ee)]
    for k in EXPAND_EVAL_KEYS:
        vals = [r.get(k) for _, r in ee]
        lines.append(f"| {k} | " + " | ".join("n/a" if v is None else f"{v:.3f}" for v in vals) + " |")
    return lines + [
        "", "The expansions are the default as `auto` loads it on any CPU, at the model's own settings: fp32, "
        f"contrast {ee[0][1].get('contrast', 'n/a')} on the first {ee[0][1].get('contrast_words', 'n/a')} words "
        f"(0: every word), the most on-topic of {ee[0][1].get('candidates', 'n/a')} beginnings of "
        f"{ee[0][1].get('pick_words', 'n/a')} words (1: no pick), {args.seeds} seeds a call; `ms_per_expansion` "
        f"is per expansion of that batch, on {platform.machine()} with {os.cpu_count()} CPUs, and "
        "`docs/benchmarks.md` has the paired timings.",
        "", "`on_topic_similarity` is the cosine between all-MiniLM-L6-v2 embeddings of the input and of the "
        "expanded prompt; `reference_similarity` calibrates it: real validation prompts scored against their "
        "own first comma-separated segment. `specificity` and `on_topic_matched` are defined in "
        "[specificity.md](specificity.md), with `human_*` the same figures for real prompts; "
        "`neighbour_list_rate` flags additions that list things like their input (4 or more modifiers of 1-2 "
        "words within cosine 0.4 of it), which raise specificity without describing the subject. `junk_rate` is "
        "the share of expansions whose added text holds a broken fragment: a bot flag, a stray or mangled number, "
        "a letter split off a word, or a word the training corpus writes fewer than 3 times (or only where "
        "prompts were cut off: `artstat`, `beautif`). The shipped default drops such modifiers using nearly that "
        "same word list (it keeps the cut-off words), so its low rate shows the filter working rather than an "
        "independent judgement.", ""]


def commands_block(commands) -> list[str]:
    return [COMMANDS_HEADING, "", "```", *commands, "```", ""]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="runs/data", help="folder from `prepare` (val.txt is scored)")
    ap.add_argument("--lstm", nargs="*", default=["runs/lstm-bpe", "runs/lstm-word"])
    ap.add_argument("--inputs", default="../shared/data/dev/partiprompts.txt")
    ap.add_argument("--limit", type=int, default=200, help="expand-eval inputs")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--work", default="runs/eval")
    ap.add_argument("--reuse-scores", action="store_true",
                    help="reuse WORK/eval-*.json from an earlier run (the scores change only with the weights)")
    ap.add_argument("--reuse-expand-eval", action="store_true",
                    help="reuse WORK/expand-eval-*.json from an earlier run of this code (they change with the decode)")
    ap.add_argument("--known-words", default=None,
                    help="prompt file whose words count as whole in expand-eval's junk rate (default DATA/train.txt)")
    ap.add_argument("--only-expand-eval", action="store_true",
                    help="rerun only expand-eval and rewrite its section of docs/evaluation.md, keeping the rest "
                         "(the validation scores change only with the weights)")
    args = ap.parse_args()
    work = ROOT / args.work
    work.mkdir(parents=True, exist_ok=True)
    val = str(Path(args.data) / "val.txt")
    known = args.known_words or str(Path(args.data) / "train.txt")
    doc = ROOT / "docs" / "evaluation.md"
    ee, ee_commands = [], []
    for name, extra in SYSTEMS:
        cmd = ["expand-eval", args.inputs, "--limit", str(args.limit), "--seeds", str(args.seeds),
               "--reference-prompts", val, "--known-words", known, *extra]
        r = run(cmd, work / f"expand-eval-{len(ee)}.json", reuse=args.reuse_expand_eval)
        ee_commands.append("python -m prompt_expander " + " ".join(cmd))
        ee.append((name, r))
    section = expand_eval_section(ee, args)
    if args.only_expand_eval:
        old = doc.read_text(encoding="utf-8")
        start, commands_at = old.index(EXPAND_EVAL_HEADING), old.index(COMMANDS_HEADING)
        old_commands = [c for c in old[commands_at:].splitlines() if c.startswith("python -m prompt_expander evaluate")]
        text = old[:start] + "\n".join(section + commands_block(old_commands + ee_commands))
        write_text_atomic(doc, text)
        print(f"rewrote the expand-eval section of {doc}")
        return
    systems = [(f"LSTM benchmark ({Path(p).name})", ["--model", p]) for p in args.lstm if (ROOT / p).exists()]
    systems += SYSTEMS
    rows, commands = [], []
    for name, extra in systems:
        r = run(["evaluate", val, *extra], work / f"eval-{len(rows)}.json", reuse=args.reuse_scores)
        commands.append(f"python -m prompt_expander evaluate {val} {' '.join(extra)}".strip())
        rows.append((name, r))
    lines = ["# Evaluation", "",
             f"Measured on {time.strftime('%Y-%m-%d')} on {platform.machine()} CPU; regenerate with "
             f"`python tools/evaluation_report.py` (it runs the commands listed at the end).", "",
             f"## Validation split (`{val}`, {rows[-1][1]['prompts']:,} prompts held out by hash)", "",
             "| system | cross-entropy (nats/token) | perplexity | bits per byte | tokens |", "|---|---:|---:|---:|---:|"]
    for name, r in rows:
        lines.append(f"| {name} | {r['cross_entropy']:.4f} | {r['perplexity']:.2f} | {r['bits_per_byte']:.4f} | "
                     f"{r['tokens']:,} |")
    by_name = dict(rows)
    if "default" in by_name and "default + on-topic" in by_name:
        cost = by_name["default + on-topic"]["bits_per_byte"] - by_name["default"]["bits_per_byte"]
        lines += ["", f"The on-topic style costs {cost:.3f} bits per byte "
                      f"({100 * cost / by_name['default']['bits_per_byte']:+.0f}%) on people's prompts, since it "
                      "learned the model's own most on-topic picks rather than what people write; the default holds as "
                      "much of it as keeps people's bits per byte, and the style adds the rest (its card, and "
                      "[specificity.md](specificity.md))."]
    lines += ["", "Perplexity compares token for token only between systems that share the BPE tokenizer (the GPT-2 "
              "models and the BPE LSTM); bits per byte compares all of them. The word-level LSTM pays for every "
              "out-of-vocabulary word by spelling it at 8 bits per byte, so `<unk>` does not flatter it.", "",
              *lstm_budget_note(args.lstm), *section, *commands_block(commands + ee_commands)]
    (ROOT / "docs").mkdir(exist_ok=True)
    write_text_atomic(doc, "\n".join(lines))
    print("wrote docs/evaluation.md")


if __name__ == "__main__":
    main()
