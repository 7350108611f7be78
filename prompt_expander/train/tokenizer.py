"""Train a byte-level BPE with `tokenizers` and save it in GPT-2 files every transformers version reads."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from ..fileio import atomic_path, write_json_atomic

EOS = "<|endoftext|>"
BOS = "<|startoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = [EOS, BOS, PAD]


def train_bpe(lines: Iterable[str], vocab_size: int, lowercase: bool = True, min_frequency: int = 2,
              extra_special: tuple[str, ...] = ()):
    """Return a trained `tokenizers.Tokenizer` (GPT-2 byte-level pre-tokenisation, no normaliser)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[*SPECIAL_TOKENS, *extra_special],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )
    # Lower-casing happens here rather than in a normaliser, because GPT-2 vocab/merges files
    # cannot carry one; the expander lower-cases its context the same way (see ModelMeta.lowercase).
    it = (line.lower() for line in lines) if lowercase else iter(lines)
    tok.train_from_iterator(it, trainer=trainer)
    return tok


def save_gpt2_tokenizer(tok, out_dir: str | Path, model_max_length: int, extra_special: tuple[str, ...] = ()) -> None:
    """Write vocab.json + merges.txt + configs: the one format transformers 4.30 through 5.x all load.

    A tokenizer.json written by a new `tokenizers` (merges as pairs) or a tokenizer_config.json
    written by transformers 5 (its own tokenizer_class) does not load under transformers 4.30.2.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = json.loads(tok.to_str())["model"]
    vocab = model["vocab"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    with atomic_path(out / "vocab.json") as tmp:
        tmp.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    with atomic_path(out / "merges.txt") as tmp:
        tmp.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    specials = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": PAD}
    if extra_special:  # e.g. the topic token: one token, never split, never generated
        specials["additional_special_tokens"] = list(extra_special)
    write_json_atomic(out / "special_tokens_map.json", specials)
    write_json_atomic(out / "tokenizer_config.json", {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": model_max_length,
        "add_prefix_space": False,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        **specials,
    })
