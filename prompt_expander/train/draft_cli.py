"""`draft-tokens`: count a prompt file's n-grams into a model folder, for its decode to guess tokens ahead."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .. import draft_tokens as dt
from ..errors import DataError
from ..fileio import write_json_atomic
from ..model.loading import load_tokenizer
from ..model.meta import META_FILE, ModelMeta, read_card
from .dataset import prompts_file, tokenize_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="a prompt file (.txt or .txt.gz, one prompt per line), or a `prepare` folder "
                                "(its train.txt is used): the prompts the model was trained on")
    p.add_argument("--model", required=True, help=f"the model folder to write {dt.DRAFT_TOKENS_FILE} into; its "
                                                  f"{META_FILE} is updated to name it")
    p.add_argument("--max-entries", type=int, default=dt.MAX_ENTRIES,
                   help=f"contexts kept per order above 1, the most useful first (default {dt.MAX_ENTRIES})")


def write_draft_tokens(model: str | Path, corpus: str | Path, max_entries: int = dt.MAX_ENTRIES) -> dt.DraftTable:
    """Count the corpus as the model reads it (its tokenizer, lower-cased or topic-tagged as it was trained) and
    name the table in the model's card."""
    from transformers import AutoConfig

    model = Path(model)
    card_path = model / META_FILE
    card = read_card(model)
    meta = ModelMeta.read(model)
    tok = load_tokenizer(model)
    config = AutoConfig.from_pretrained(str(model))
    # the decode's context starts with BOS, or EOS for a tokenizer without one (Expander._context_ids)
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    data = tokenize_file(corpus, tok, meta.lowercase, bos, tok.eos_token_id, config.n_positions,
                         topic_tags=meta.topic_tags)
    table = dt.DraftTable.build(data.tokens, config.vocab_size, bos, tok.eos_token_id, max_entries=max_entries)
    table.save(model / dt.DRAFT_TOKENS_FILE, max_entries=max_entries, prompts=len(data))
    card["draft_tokens"] = dt.DRAFT_TOKENS_FILE
    write_json_atomic(card_path, card)
    return table


def main(args) -> int:
    if args.max_entries < 1:
        raise DataError(f"--max-entries must be at least 1, got {args.max_entries}")
    if not Path(args.model).is_dir():
        raise DataError(f"--model {args.model}: no such folder")
    started = time.time()
    table = write_draft_tokens(args.model, prompts_file(args.data), args.max_entries)
    path = Path(args.model) / dt.DRAFT_TOKENS_FILE
    orders = ", ".join(f"{len(c):,} of {n}" for n, c in sorted(table.contexts.items()))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB; contexts {orders}) in {time.time() - started:.0f} s")
    return 0
