"""`word-vectors`: learn word vectors from a prompt file into a model folder, for the on-topic pick."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import DataError
from ..fileio import write_json_atomic
from ..model.meta import META_FILE, read_card
from .. import word_vectors as wv
from .dataset import prompts_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="a prompt file (.txt or .txt.gz, one prompt per line), or a `prepare` folder "
                                "(its train.txt is used)")
    p.add_argument("--model", required=True, help="the model folder to write word_vectors.safetensors into; its "
                                                  f"{META_FILE} is updated to name them")
    p.add_argument("--window", type=int, default=wv.WINDOW, help="words either side that count as near "
                                                                 f"(default {wv.WINDOW})")
    p.add_argument("--dimensions", type=int, default=wv.DIMENSIONS, help=f"default {wv.DIMENSIONS}")
    p.add_argument("--max-words", type=int, default=wv.MAX_WORDS, help="keep the commonest this many words "
                                                                       f"(default {wv.MAX_WORDS})")
    p.add_argument("--min-count", type=int, default=wv.MIN_COUNT, help="and only words written this often "
                                                                       f"(default {wv.MIN_COUNT})")


def write_word_vectors(model: str | Path, corpus: str | Path, **settings) -> bool:
    """Learn the vectors and name them in the model's card; False when the corpus has too few words for them
    (the card is left as it was)."""
    model = Path(model)
    card_path = model / META_FILE
    card = read_card(model)
    vectors = wv.build_word_vectors(corpus, **settings)
    if vectors is None:
        return False
    vectors.save(model / wv.WORD_VECTORS_FILE, **settings)
    card["word_vectors"] = wv.WORD_VECTORS_FILE
    write_json_atomic(card_path, card)
    return True


def main(args) -> int:
    for name in ("window", "dimensions", "max_words", "min_count"):
        if getattr(args, name) < 1:
            raise DataError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not Path(args.model).is_dir():
        raise DataError(f"--model {args.model}: no such folder")
    started = time.time()
    written = write_word_vectors(args.model, prompts_file(args.data), window=args.window,
                                 dimensions=args.dimensions, max_words=args.max_words, min_count=args.min_count)
    if not written:
        raise DataError(f"{args.data}: fewer than 3 words written {args.min_count} times or more; "
                        "too little text for word vectors")
    print(f"wrote {Path(args.model) / wv.WORD_VECTORS_FILE} in {time.time() - started:.0f} s")
    return 0
