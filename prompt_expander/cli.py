"""Command-line interface: one subcommand per job, each with --help."""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import ExpanderError

# name -> (module, help); modules are imported only when their command runs, to keep --help fast.
COMMANDS = {
    "expand": ("expansion.cli", "expand a prompt (or a file of prompts) with the default or a given model"),
    "prepare": ("data.prepare", "clean, deduplicate, filter and split prompt sources"),
    "harvest": ("data.harvest", "collect prompts from the metadata of generated images"),
    "train-base": ("train.base", "train a BPE tokenizer and a GPT-2 model from scratch"),
    "self-distill": ("train.self_distill", "training prompts made by a model itself, each the most on-topic of K "
                                           "samples, for train-lora"),
    "word-vectors": ("train.word_vectors_cli", "learn word vectors from a prompt file into a model folder, for the "
                                               "on-topic pick"),
    "draft-tokens": ("train.draft_cli", "count a prompt file's n-grams into a model folder, for its decode to guess "
                                        "tokens ahead"),
    "train-lora": ("train.lora", "fine-tune a LoRA adapter (or the last k blocks) on a base model"),
    "evaluate": ("evaluation.evaluate", "cross-entropy, perplexity and bits per byte of a model on a prompts file"),
    "train-lstm": ("evaluation.lstm", "train the LSTM benchmark (BPE or word level)"),
    "expand-eval": ("evaluation.expand_eval", "faithfulness, diversity and safety figures of expansions"),
    "make-sheet": ("evaluation.sheets", "write a blinded human-rating sheet (HTML + CSV)"),
    "score-sheet": ("evaluation.sheets", "un-blind filled rating sheets: means, sigma and weighted kappa"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; only `command`'s module is imported (all of them when None)."""
    parser = argparse.ArgumentParser(prog="python -m prompt_expander",
                                     description="Prompt Expander: expand, train and evaluate GPT-2 prompt expanders.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if command in (None, name):
            mod = importlib.import_module(f".{module}", __package__)
            adder = getattr(mod, "add_arguments_" + name.replace("-", "_"), None) or mod.add_arguments
            adder(p)
        p.set_defaults(_module=module, _command=name)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else "")
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    mod = importlib.import_module(f".{args._module}", __package__)
    runner = getattr(mod, "main_" + args._command.replace("-", "_"), None) or mod.main
    try:
        return runner(args) or 0
    except ExpanderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
