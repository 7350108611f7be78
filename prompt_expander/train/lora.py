"""`train-lora`: fine-tune a PEFT LoRA adapter (or only the last k blocks) on any GPT-2-family base."""
from __future__ import annotations

import argparse
import json
import re
import shlex
import time
from pathlib import Path

from ..model.adapters import ADAPTER_META, base_fingerprint, base_probe, write_portable_config
from ..fileio import iter_lines, write_json_atomic, write_lines_atomic, write_text_atomic
from ..model.meta import ModelMeta, copy_tokenizer_files
from .loop import add_loop_arguments, loop_config, main_process_first, run_training, save_pretrained_atomic, say

GPT2_TARGETS = "c_attn,c_proj,c_fc"
LORA_DROPOUT = 0.05
EMBEDDING_MODULES = {"wte", "wpe", "lm_head", "embed_tokens"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="folder with train.txt/val.txt (from `prepare`), or a prompts file")
    p.add_argument("--val", help="validation prompts file (default: DATA/val.txt)")
    p.add_argument("--base", default=None, help="base model folder or hub id, e.g. gpt2 (default: models/default)")
    p.add_argument("--out", required=True, help="output adapter folder")
    p.add_argument("--select", default="",
                   help="keep only prompts containing one of these comma-separated keywords (a style subset)")
    p.add_argument("--select-on-topic", type=_fraction, default=None, metavar="SHARE",
                   help="then keep this share (0-1] of the prompts whose subject has 1-3 words, those whose added "
                        "words are most about their own subject, by the base's own token embeddings")
    p.add_argument("--r", type=int, default=16, help="LoRA rank (default 16)")
    p.add_argument("--alpha", type=float, default=32, help="LoRA alpha (default 32)")
    p.add_argument("--lora-dropout", type=float, default=LORA_DROPOUT)
    p.add_argument("--target-modules", default=GPT2_TARGETS, help=f"comma-separated (default {GPT2_TARGETS})")
    p.add_argument("--freeze-last-k", type=int, default=0,
                   help="instead of LoRA, train only the last K transformer blocks (writes a full model)")
    p.add_argument("--merge", metavar="DIR", help="also write a standalone merged model (base + adapter) to DIR")
    add_loop_arguments(p, steps=1000, batch_size=32, lr=5e-4, warmup=50, save_every=200)


def _style_files(args, out: Path, tokenizer=None, embeddings=None, lowercase: bool = True,
                 base_fingerprint: str = "") -> tuple[Path, Path | None]:
    """The training/validation files, narrowed to --select keywords and then to --select-on-topic's share when
    given. The narrowed files are kept in OUT/cache and reused only when built from the same files, settings
    and base (a run folder reused with other keywords used to train on the old subset)."""
    data = Path(args.data)
    train = data / "train.txt" if data.is_dir() else data
    val = Path(args.val) if args.val else (data / "val.txt" if data.is_dir() else None)
    val = val if val is not None and val.exists() else None
    on_topic = args.select_on_topic
    if not args.select and not on_topic:
        return train, val
    from .dataset import file_digest
    subset = out / "cache"
    subset.mkdir(parents=True, exist_ok=True)
    recipe = {"train": file_digest(train), "val": file_digest(val) if val else None, "select": args.select,
              "select_on_topic": on_topic, "base": base_fingerprint if on_topic else None,
              "lowercase": bool(lowercase) if on_topic else None}
    if on_topic:  # a subset chosen by an earlier rule is chosen again
        from .on_topic_subset import MODIFIER_RATIO, PER_SUBJECT
        recipe["rule"] = {"modifier_ratio": MODIFIER_RATIO, "per_subject": PER_SUBJECT}
    record = subset / "selection.json"
    names = ["train.selected", "val.selected"] if not on_topic else ["train.on_topic", "val.on_topic"]
    kept = [subset / f"{n}.txt" if src is not None else None for n, src in zip(names, (train, val))]
    try:
        same = json.loads(record.read_text()) == recipe
    except (OSError, ValueError):  # none yet, or unreadable: build the subset again
        same = False
    if same and all(k is None or k.exists() for k in kept):
        return kept[0], kept[1]
    record.unlink(missing_ok=True)
    if args.select:
        words = [w.strip().lower() for w in args.select.split(",") if w.strip()]
        pattern = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
        narrowed = []
        for name, src in (("train", train), ("val", val)):
            if src is None:
                narrowed.append(None)
                continue
            dst = subset / f"{name}.selected.txt"
            write_lines_atomic(dst, (line for line in iter_lines(src) if pattern.search(line)))
            narrowed.append(dst)
        train, val = narrowed
    if on_topic:
        from .on_topic_subset import select_on_topic
        try:
            train, val, threshold = select_on_topic(train, val, subset, on_topic, tokenizer, embeddings, lowercase)
        except ValueError as e:
            raise SystemExit(f"train-lora: --select-on-topic: {e}") from None
        say(f"on-topic subset: the {on_topic:.0%} of scoreable prompts scoring {threshold:.4f} or more")
    write_json_atomic(record, recipe)
    return train, val


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a share in (0, 1], got {text}")
    return value


def load_base(base):
    from ..model.loading import check_weights, load_model, load_tokenizer, resolve_model_folder

    folder, model_id = resolve_model_folder(base)
    check_weights(folder)
    import torch
    model = load_model(folder, torch.device("cpu"), torch.float32)
    model.requires_grad_(True)
    return folder, model_id, model, load_tokenizer(folder)


def main(args) -> int:
    from .dataset import PackedBatches, tokenize_file
    from ..evaluation.scoring import evaluate_lines

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    folder, base_id, model, tok = load_base(args.base)
    meta = ModelMeta.read(folder)
    fingerprint, probe = base_fingerprint(model), base_probe(model)
    n_pos = getattr(model.config, "n_positions", 1024)
    row_len = min(n_pos, 128)
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    with main_process_first():
        train_file, val_file = _style_files(args, out, tok, model.get_input_embeddings().weight.detach(),
                                            meta.lowercase, fingerprint)
        cache = out / "cache"
        cache.mkdir(exist_ok=True)
        train_data = tokenize_file(train_file, tok, meta.lowercase, bos, tok.eos_token_id, row_len,
                                   cache / "train.npz", meta.topic_tags)
        val_data = (tokenize_file(val_file, tok, meta.lowercase, bos, tok.eos_token_id, row_len, cache / "val.npz",
                                  meta.topic_tags) if val_file else None)
    if len(train_data) == 0:
        raise SystemExit(f"train-lora: no training prompts in {train_file}")
    train = PackedBatches(train_data, row_len, args.batch_size, args.seed, pad, bos)
    val = PackedBatches(val_data, row_len, args.batch_size, args.seed, pad, bos, shuffle=False) if val_data else None
    say(f"base {base_id}: train {len(train_data)} prompts" + (f", val {len(val_data)}" if val_data else ""))

    if args.freeze_last_k:
        blocks = model.transformer.h
        model.requires_grad_(False)
        for block in list(blocks)[-args.freeze_last_k:]:
            block.requires_grad_(True)
        model.transformer.ln_f.requires_grad_(True)
    else:
        from peft import LoraConfig, get_peft_model
        targets = [t.strip() for t in args.target_modules.split(",") if t.strip()]
        is_conv1d = getattr(model.config, "model_type", "") == "gpt2"
        lora = LoraConfig(r=args.r, lora_alpha=args.alpha, lora_dropout=args.lora_dropout, target_modules=targets,
                          fan_in_fan_out=is_conv1d, bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
        model.peft_config["default"].base_model_name_or_path = base_id
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    say(f"trainable parameters: {trainable:,}")

    def save_final(model, state):
        val_lines = list(iter_lines(val_file))[:3000] if val_file else []
        if args.freeze_last_k:
            save_pretrained_atomic(model, out)
            copy_tokenizer_files(folder, out)
            base_metrics = None
        else:
            # peft's "auto" asks the Hub whether the base (named "default" here) changed its vocabulary, which
            # offline prints two warnings and online looks up a stranger's repo; training never resizes it.
            targets = {t.strip() for t in args.target_modules.split(",")}
            save_pretrained_atomic(model, out, save_embedding_layers=bool(targets & EMBEDDING_MODULES))
            write_portable_config(out)
            write_json_atomic(out / ADAPTER_META, {"base_id": base_id, "base_fingerprint": fingerprint,
                                                   "base_probe": probe, "select": args.select,
                                                   "select_on_topic": args.select_on_topic})
            base_metrics = None
            if val_lines:
                with model.disable_adapter():
                    base_metrics = evaluate_lines(model, tok, meta, val_lines)
        metrics = evaluate_lines(model, tok, meta, val_lines) if val_lines else {}
        state["val_metrics"], state["base_val_metrics"] = metrics, base_metrics
        write_json_atomic(out / "training_summary.json", state)
        write_text_atomic(out / "README.md", adapter_card(args, base_id, state, metrics, base_metrics,
                                                          len(train_data), time.time() - started))
        if args.merge and not args.freeze_last_k:
            merge_to(model, tok, folder, args.merge)

    # The base's fingerprint goes into the checkpoint, so that --resume on another base stops (check_resumable).
    state = run_training(model, train, val, loop_config(args, base_fingerprint=fingerprint), save_final=save_final,
                         desc="train-lora")
    if state.get("finished"):
        say(f"saved to {out}")
    return 0


def merge_to(peft_model, tok, base_folder: Path, dest) -> None:
    """Write base + adapter as one standalone model folder (tokenizer and meta included)."""
    import copy
    merged = copy.deepcopy(peft_model).merge_and_unload()
    dest = Path(dest)
    save_pretrained_atomic(merged, dest)
    if not (base_folder / "vocab.json").exists() and not (base_folder / "tokenizer.json").exists():
        tok.save_pretrained(str(dest))
    copy_tokenizer_files(base_folder, dest)
    say(f"merged model written to {dest}")


def adapter_card(args, base_id, state, metrics, base_metrics, n_train, wall_s) -> str:
    from .on_topic_subset import PER_SUBJECT

    def fmt(m):
        return (f"CE {m['cross_entropy']:.4f}, perplexity {m['perplexity']:.2f}, bits/byte {m['bits_per_byte']:.4f}"
                if m else "n/a")
    on_topic = (f", the {args.select_on_topic:.0%} of prompts with a 1-3-word subject whose added words are most about "
                f"it (by the base's own token embeddings; a first phrase that prompts mostly write later, such as "
                f"\"concept art\", is a style, not a subject, and each subject keeps at most its best "
                f"{PER_SUBJECT})" if args.select_on_topic else "")
    kind = f"last {args.freeze_last_k} blocks fine-tuned" if args.freeze_last_k else \
        f"LoRA r={args.r}, alpha={args.alpha}, dropout={args.lora_dropout}, targets {args.target_modules}"
    return f"""---
license: apache-2.0
library_name: peft
base_model: {base_id}
---
# Prompt Expander style adapter `{Path(args.out).name}`

{kind}, trained by `python -m prompt_expander train-lora` on base `{base_id}`.

- data: `{args.data}`{f", prompts containing any of: {args.select}" if args.select else ""}{on_topic} ({n_train:,} training prompts)
- steps {state['step']}, batch {args.batch_size}, lr {args.lr}, tokens seen {state['tokens_seen']:,}, wall time {state['elapsed_s'] / 60:.1f} min ({wall_s / 60:.1f} min this run)
- machine: {state.get('machine')}

## Validation on the style subset (first 3,000 prompts)
- base alone: {fmt(base_metrics)}
- base + this adapter: {fmt(metrics)}

## Reproduce
```
{reproduce_command(args, state['config']['steps'])}
```
"""


def reproduce_command(args, steps: int) -> str:
    """The train-lora command that repeats this run: every option that shapes the weights, with the steps a
    --minutes run fitted in place of --minutes (paths and keywords quoted for a POSIX shell)."""
    q = shlex.quote
    parts = ["python -m prompt_expander train-lora", q(str(args.data))]
    if args.val:
        parts.append(f"--val {q(str(args.val))}")
    parts += [f"--base {q(str(args.base or 'models/default'))}", f"--out {q(str(args.out))}"]
    if args.select:
        parts.append(f"--select {q(args.select)}")
    if args.select_on_topic:
        parts.append(f"--select-on-topic {args.select_on_topic}")
    if args.freeze_last_k:
        parts.append(f"--freeze-last-k {args.freeze_last_k}")
    else:
        parts += [f"--r {args.r}", f"--alpha {args.alpha}"]
        if args.lora_dropout != LORA_DROPOUT:
            parts.append(f"--lora-dropout {args.lora_dropout}")
        if args.target_modules != GPT2_TARGETS:
            parts.append(f"--target-modules {q(args.target_modules)}")
    parts += [f"--steps {steps}", f"--batch-size {args.batch_size}", f"--lr {args.lr}", f"--warmup {args.warmup}",
              f"--weight-decay {args.weight_decay}", f"--seed {args.seed}"]
    if args.precision != "auto":
        parts.append(f"--precision {args.precision}")
    return " ".join(parts + ["--resume"])
