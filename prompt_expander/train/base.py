"""`train-base`: train a byte-level BPE and a GPT-2 model from scratch on prepared prompts."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..fileio import atomic_path, iter_lines, write_json_atomic, write_text_atomic
from ..fragments import KNOWN_WORDS_FILE, corpus_words, write_known_words
from ..model.meta import META_FILE, ModelMeta
from .loop import (CHECKPOINT_DIR, add_loop_arguments, is_main_process, loop_config, main_process_first,
                   run_training, save_pretrained_atomic, say)

NEGATIVE_VOCAB = "negative_vocab.txt"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="folder written by `prepare` (train.txt, val.txt), or a train.txt file")
    p.add_argument("--val", help="validation prompts file (default: DATA/val.txt)")
    p.add_argument("--out", required=True, help="output model folder (checkpoints go to OUT/checkpoint)")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--no-lowercase", action="store_true", help="keep case (CLIP lower-cases anyway)")
    p.add_argument("--n-layer", type=int, default=6)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--n-head", type=int, default=8)
    p.add_argument("--n-positions", type=int, default=128, help="context length; longer prompts are cut")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--negative-vocab", help="negative-prompt terms to ship with the model (enables negative mode)")
    p.add_argument("--topic-tags", action="store_true",
                   help="train on topic-tagged prompts: each one's subject, a topic token, then the prompt "
                        "(the expander then names the user's subject the same way)")
    p.add_argument("--save-dtype", choices=["fp32", "fp16", "bf16"], default="fp32",
                   help="dtype of the saved weights (fp16 halves the folder; the model card's validation figures "
                        "are the fp32 weights')")
    add_loop_arguments(p, steps=20000, batch_size=64, lr=2e-3, warmup=300, save_every=500)


def _paths(args):
    data = Path(args.data)
    train = data / "train.txt" if data.is_dir() else data
    val = Path(args.val) if args.val else (data / "val.txt" if data.is_dir() else None)
    return train, (val if val is not None and val.exists() else None)


TOKENIZER_SOURCE = "tokenizer_source.json"  # in OUT/cache: what OUT's tokenizer was trained from


def load_or_train_tokenizer(out: Path, train_file: Path, vocab_size: int, lowercase: bool, n_positions: int,
                            resume: bool = False, topic_tags: bool = False):
    """OUT's tokenizer when it was trained from the same data and settings, else a newly trained one.

    A resumed run cannot switch tokenizers under its checkpoint, so there a mismatch is an error."""
    from transformers import GPT2TokenizerFast

    from .dataset import file_digest
    from ..errors import DataError
    from ..fileio import read_json
    from ..topics import TOPIC_TOKEN, tagged
    from .tokenizer import save_gpt2_tokenizer, train_bpe

    source = {"train_sha256": file_digest(train_file), "vocab_size": vocab_size, "lowercase": lowercase}
    if topic_tags:  # only when on, so that the records of earlier runs still match
        source["topic_tags"] = True
    record = out / "cache" / TOKENIZER_SOURCE
    if (out / "vocab.json").exists():
        recorded = read_json(record) if record.is_file() else None
        if recorded == source:
            return GPT2TokenizerFast.from_pretrained(str(out))
        why = ("was trained from other data or settings" if recorded else
               "has no record of the data it was trained from")
        if resume and (out / CHECKPOINT_DIR).exists():
            raise DataError(f"{out}: its tokenizer {why}, so its checkpoint cannot continue on {train_file}; "
                            "use a new --out, or drop --resume to start over in this folder")
        say(f"note: {out}: the tokenizer there {why}; training a new one")
    lines = (tagged(line) for line in iter_lines(train_file)) if topic_tags else iter_lines(train_file)
    extra = (TOPIC_TOKEN,) if topic_tags else ()
    tok = train_bpe(lines, vocab_size, lowercase=lowercase, extra_special=extra)
    save_gpt2_tokenizer(tok, out, n_positions, extra_special=extra)
    write_json_atomic(record, source)
    return GPT2TokenizerFast.from_pretrained(str(out))


def build_model(args, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=args.n_positions, n_embd=args.n_embd, n_layer=args.n_layer,
        n_head=args.n_head, resid_pdrop=args.dropout, embd_pdrop=args.dropout, attn_pdrop=args.dropout,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    return GPT2LMHeadModel(config)


def main(args) -> int:
    from .dataset import PackedBatches, tokenize_file
    from ..evaluation.scoring import evaluate_lines

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_file, val_file = _paths(args)
    lowercase = not args.no_lowercase
    started = time.time()
    with main_process_first():
        tok = load_or_train_tokenizer(out, train_file, args.vocab_size, lowercase, args.n_positions, args.resume,
                                      args.topic_tags)
        bos, eos, pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
        cache = out / "cache"
        cache.mkdir(exist_ok=True)
        train_data = tokenize_file(train_file, tok, lowercase, bos, eos, args.n_positions, cache / "train.npz",
                                   args.topic_tags)
        val_data = (tokenize_file(val_file, tok, lowercase, bos, eos, args.n_positions, cache / "val.npz",
                                  args.topic_tags) if val_file else None)
        if is_main_process() and not (args.resume and (out / KNOWN_WORDS_FILE).is_file()):
            write_known_words(out / KNOWN_WORDS_FILE, corpus_words(train_file))
    say(f"tokenizer: {len(tok)} tokens; train {len(train_data)} prompts / {train_data.n_tokens} tokens"
        + (f"; val {len(val_data)} prompts" if val_data else ""))
    train = PackedBatches(train_data, args.n_positions, args.batch_size, args.seed, pad, bos)
    val = PackedBatches(val_data, args.n_positions, args.batch_size, args.seed, pad, bos, shuffle=False) if val_data else None
    import torch
    torch.manual_seed(args.seed)  # the initial weights are part of a reproducible run
    model = build_model(args, tok)
    n_params = sum(p.numel() for p in model.parameters())
    say(f"model: {n_params / 1e6:.2f}M parameters, about {train.batches_per_epoch():.0f} steps per epoch")
    meta = ModelMeta(lowercase=lowercase, topic_tags=args.topic_tags, known_words=KNOWN_WORDS_FILE)
    if args.negative_vocab:
        if is_main_process():
            import shutil
            with atomic_path(out / NEGATIVE_VOCAB) as tmp:
                shutil.copyfile(args.negative_vocab, tmp)
        meta.negative_vocabulary = NEGATIVE_VOCAB
    elif (out / NEGATIVE_VOCAB).is_file():  # a resumed run keeps the terms its first invocation shipped
        meta.negative_vocabulary = NEGATIVE_VOCAB

    def save_final(model, state):
        state["epochs"] = round(train.epochs_seen(state["step"]), 3)
        save_pretrained_atomic(model if args.save_dtype == "fp32" else _cast(model, args.save_dtype), out)
        write_json_atomic(out / META_FILE, meta.to_dict())
        metrics = evaluate_lines(model, tok, meta, list(iter_lines(val_file))[:5000]) if val_file else {}
        state["val_metrics"] = metrics
        write_json_atomic(out / "training_summary.json", state)
        write_text_atomic(out / "README.md", model_card(args, state, n_params, train_data, metrics,
                                                         time.time() - started))

    cfg = loop_config(args)
    state = run_training(model, train, val, cfg, save_final=save_final, desc="train-base")
    if state.get("finished"):
        say(f"saved model to {out}")
    return 0


def _cast(model, dtype: str):
    """A copy of the trained model in `dtype` for saving; the fp32 model goes on to be evaluated."""
    import copy

    from ..model.loading import DTYPES
    return copy.deepcopy(model).to(DTYPES[dtype])  # one copy, so tied embeddings stay one tensor


def model_card(args, state, n_params, train_data, metrics, wall_s) -> str:
    stats_file = Path(args.data) / "stats.json" if Path(args.data).is_dir() else None
    stats = stats_file.read_text() if stats_file and stats_file.exists() else "(no stats.json found)"
    hist = "\n".join(f"| {h['step']} | {h['train_loss']} | {h['val_loss']} | {h['val_ppl']} | {h['tokens_seen']:,} |"
                     for h in state["history"])
    m = metrics or {}
    topic_note = (" Topic-tagged: each prompt is written as its subject, `<|topic|>`, then the prompt "
                  "(`prompt_expander.topics.tagged`), and the expander gives the user's subject the same way."
                  if args.topic_tags else "")
    fitted_note = (f" (fitted to {state['config'].get('minutes')} minutes of training on this device; `--steps` "
                   f"{state['fitted_steps']} repeats it)" if state.get("fitted_steps") else "")
    return f"""---
license: apache-2.0
library_name: transformers
tags: [gpt2, stable-diffusion, prompt-expansion]
---
# Prompt Expander default model

A small GPT-2 trained from scratch by `python -m prompt_expander train-base` to continue Stable Diffusion
prompts. Lower-cased byte-level BPE; every training prompt is wrapped in `<|startoftext|>` ... `<|endoftext|>`.{topic_note}

## Data
Prompts from `{args.data}` after `prepare` (whitespace normalised, case/punctuation-insensitive dedup,
chatter/URL/bot-command/too-short filters, NSFW word-list filter, hash split). Statistics:

```json
{stats}
```
{len(train_data):,} training prompts, {train_data.n_tokens:,} tokens.

## Tokenizer and model
- byte-level BPE, vocabulary {args.vocab_size}, lower-case, special tokens `<|endoftext|>` (EOS), `<|startoftext|>` (BOS), `<|pad|>`
- GPT2Config: n_layer={args.n_layer}, n_embd={args.n_embd}, n_head={args.n_head}, n_positions={args.n_positions}, dropout={args.dropout}, tied embeddings; {n_params / 1e6:.2f}M parameters; weights saved in {args.save_dtype}
- saved as safetensors; tokenizer as vocab.json + merges.txt (loads in transformers 4.30 through 5.x)

## Training
- steps {state['step']}{fitted_note}, batch {args.batch_size} rows of {args.n_positions} tokens, peak lr {args.lr}, warm-up {args.warmup}, cosine decay, AdamW (0.9, 0.95), weight decay {args.weight_decay}, precision {state.get('precision')}
- tokens seen {state['tokens_seen']:,} ({state.get('epochs', float('nan')):.2f} epochs); training wall time {state['elapsed_s'] / 60:.1f} min (this invocation {wall_s / 60:.1f} min)
- device: {state.get('device', 'not recorded')}; steady throughput {state.get('steady_tokens_per_s', float('nan')):,.0f} tokens/s (this invocation)
- machine: {state.get('machine')}

| step | train loss | val loss | val ppl | tokens seen |
|---:|---:|---:|---:|---:|
{hist}

## Validation (first 5,000 prompts of the validation split)
- cross-entropy {m.get('cross_entropy', float('nan')):.4f} nats/token, perplexity {m.get('perplexity', float('nan')):.2f}, bits per byte {m.get('bits_per_byte', float('nan')):.4f}
- {m.get('prompts', 0)} prompts, {m.get('tokens', 0)} tokens

## Reproduce
```
python -m prompt_expander prepare ../shared/data/train --out runs/data
python -m prompt_expander train-base runs/data --out {args.out} --vocab-size {args.vocab_size} --n-layer {args.n_layer} --n-embd {args.n_embd} --n-head {args.n_head} --n-positions {args.n_positions} --steps {state['config']['steps']} --batch-size {args.batch_size} --lr {args.lr} --warmup {args.warmup} --save-every {args.save_every}{' --topic-tags' if args.topic_tags else ''} --resume
```
(Interrupted runs continue with the same command; `--resume` picks up OUT/checkpoint.)
"""
