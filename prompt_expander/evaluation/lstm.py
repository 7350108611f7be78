"""`train-lstm`: the background's LSTM benchmark (embedding, 2-layer LSTM, dropout, linear; Adam)."""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

from torch import nn

from ..errors import DataError
from .scoring import encode_for_scoring, score_lines
from ..fileio import iter_lines, write_json_atomic, write_lines_atomic
from ..data.prepare import dedup_key
from ..train.loop import add_loop_arguments, loop_config, run_training

CONFIG_FILE = "lstm_config.json"
WORD_SPECIALS = ["<eos>", "<bos>", "<pad>", "<unk>"]
_WORD_TOKENS = re.compile(r"[^\W_]+|[^\w\s]", re.UNICODE)
BYTE_NATS = math.log(256)


class LSTMLM(nn.Module):
    def __init__(self, vocab_size: int, emb: int = 256, hidden: int = 512, layers: int = 2, dropout: float = 0.2,
                 max_len: int = 128):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, emb)
        self.lstm = nn.LSTM(emb, hidden, num_layers=layers, dropout=dropout if layers > 1 else 0.0, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, vocab_size)
        self.config = SimpleNamespace(n_positions=max_len, vocab_size=vocab_size)

    def forward(self, input_ids, labels=None):
        hidden, _ = self.lstm(self.embed(input_ids))
        logits = self.out(self.drop(hidden))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(),
                                               labels[:, 1:].reshape(-1), ignore_index=-100)
        return SimpleNamespace(logits=logits, loss=loss)


class WordVocab:
    """Word-level vocabulary of the background's baseline; everything else is <unk>."""

    def __init__(self, words: list[str]):
        self.itos = WORD_SPECIALS + [w for w in words if w not in WORD_SPECIALS]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.eos_id, self.bos_id, self.pad_id, self.unk_id = 0, 1, 2, 3

    @staticmethod
    def split(text: str) -> list[str]:
        return _WORD_TOKENS.findall(text.lower())

    @classmethod
    def build(cls, lines, size: int) -> "WordVocab":
        counts = Counter(w for line in lines for w in cls.split(line))
        return cls([w for w, _ in counts.most_common(size - len(WORD_SPECIALS))])

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(w, self.unk_id) for w in self.split(text)]


def is_lstm_folder(path) -> bool:
    return path is not None and (Path(path) / CONFIG_FILE).is_file()


class LoadedLSTM:
    def __init__(self, folder: Path, device="cpu"):
        from safetensors.torch import load_file
        self.folder = folder
        self.cfg = json.loads((folder / CONFIG_FILE).read_text())
        c = self.cfg
        self.model = LSTMLM(c["vocab_size"], c["emb"], c["hidden"], c["layers"], c["dropout"], c["max_len"])
        self.model.load_state_dict(load_file(str(folder / "model.safetensors")))
        self.model.to(device).eval()
        if c["tokenizer"] == "word":
            self.vocab = WordVocab(json.loads((folder / "words.json").read_text())[len(WORD_SPECIALS):])
            self.tokenizer = None
        else:
            from transformers import GPT2TokenizerFast
            self.tokenizer, self.vocab = GPT2TokenizerFast.from_pretrained(str(folder)), None

    def encode(self, text: str):
        """(ids, bytes, extra nats) exactly as training saw the prompt; see scoring.score_lines."""
        max_len = self.cfg["max_len"]
        if self.vocab is None:
            ids, nbytes = encode_for_scoring(self.tokenizer, text, self.cfg["lowercase"], max_len)
            return ids, nbytes, 0.0
        words = self.vocab.split(text)[: max_len - 2]
        ids = [self.vocab.bos_id, *(self.vocab.stoi.get(w, self.vocab.unk_id) for w in words), self.vocab.eos_id]
        # An honest <unk>: the word must still be spelled out, here byte by byte at 8 bits each.
        spelled = sum((len(w.encode("utf-8")) + 1) * BYTE_NATS for w in words if w not in self.vocab.stoi)
        return ids, len(text.lower().encode("utf-8")) + 1, spelled

    def evaluate_lines(self, lines, batch_size=64, progress=False) -> dict:
        return score_lines(self.model, lines, self.encode, batch_size, progress)


def load_lstm(path, device="cpu") -> LoadedLSTM:
    return LoadedLSTM(Path(path), device)


def leakage(train_file, val_file) -> int:
    """How many validation prompts also occur (case/punctuation-insensitively) in the training data."""
    seen = {hashlib.blake2b(dedup_key(t).encode(), digest_size=8).digest() for t in iter_lines(train_file)}
    return sum(hashlib.blake2b(dedup_key(t).encode(), digest_size=8).digest() in seen for t in iter_lines(val_file))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="folder with train.txt and val.txt (the split the GPT-2 models use)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--variant", choices=["bpe", "word"], default="bpe",
                   help="bpe: our model's tokenizer (token-for-token perplexity); word: the background's word level")
    p.add_argument("--tokenizer", default=None, help="model folder whose BPE tokenizer to use (default models/default)")
    p.add_argument("--word-vocab", type=int, default=20000, help="word-level vocabulary size")
    p.add_argument("--max-train-prompts", type=int, default=0, help="train on the first N prompts only")
    p.add_argument("--emb", type=int, default=256)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--patience", type=int, default=3, help="early stop after N validations without improvement")
    p.add_argument("--allow-leakage", action="store_true", help="train even if val prompts occur in train")
    add_loop_arguments(p, steps=3000, batch_size=32, lr=2e-3, warmup=100, save_every=250)


def main(args) -> int:
    from ..train.dataset import PackedBatches, TokenizedPrompts, tokenize_file

    data, out = Path(args.data), Path(args.out)
    train_file, val_file = data / "train.txt", data / "val.txt"
    if not train_file.is_file() or not val_file.is_file():
        raise DataError(f"{data} must hold train.txt and val.txt (run `prepare`)")
    out.mkdir(parents=True, exist_ok=True)
    if args.max_train_prompts:
        subset = out / "train.subset.txt"
        if not subset.exists():
            write_lines_atomic(subset, itertools.islice(iter_lines(train_file), args.max_train_prompts))
        train_file = subset
    leaks = leakage(train_file, val_file)
    print(f"train/validation leakage: {leaks} validation prompts also in training")
    if leaks and not args.allow_leakage:
        raise DataError(f"{leaks} validation prompts occur in the training data; re-split with `prepare` "
                        "or pass --allow-leakage")
    cfg = {"variant": args.variant, "tokenizer": args.variant, "emb": args.emb, "hidden": args.hidden,
           "layers": args.layers, "dropout": args.dropout, "max_len": args.max_len, "leakage": leaks}
    if args.variant == "bpe":
        from ..model.loading import load_tokenizer, resolve_model_folder
        from ..model.meta import ModelMeta, copy_tokenizer_files
        folder, _ = resolve_model_folder(args.tokenizer)
        tok = load_tokenizer(folder)
        lowercase = ModelMeta.read(folder).lowercase
        copy_tokenizer_files(folder, out, with_meta=False)
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        eos, pad = tok.eos_token_id, tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        train = tokenize_file(train_file, tok, lowercase, bos, eos, args.max_len, out / "train.npz")
        val = tokenize_file(val_file, tok, lowercase, bos, eos, args.max_len, out / "val.npz")
        vocab_size = len(tok)
    else:
        vocab = WordVocab.build(iter_lines(train_file), args.word_vocab)
        write_json_atomic(out / "words.json", vocab.itos)
        lowercase, bos, eos, pad = True, vocab.bos_id, vocab.eos_id, vocab.pad_id
        enc = lambda texts: [vocab.encode(t) for t in texts]  # noqa: E731
        train = TokenizedPrompts.build(iter_lines(train_file), enc, bos, eos, args.max_len)
        val = TokenizedPrompts.build(iter_lines(val_file), enc, bos, eos, args.max_len)
        vocab_size = len(vocab.itos)
    cfg.update(vocab_size=vocab_size, lowercase=lowercase)
    model = LSTMLM(vocab_size, args.emb, args.hidden, args.layers, args.dropout, args.max_len)
    train_b = PackedBatches(train, args.max_len, args.batch_size, args.seed, pad, bos)
    val_b = PackedBatches(val, args.max_len, args.batch_size, args.seed, pad, bos, shuffle=False)
    loop = loop_config(args)
    loop.weight_decay = 0.0  # plain Adam, as in the background
    loop.early_stop_patience = args.patience

    def save_final(model, state):
        from safetensors.torch import save_file

        from ..fileio import atomic_path
        with atomic_path(out / "model.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        cfg["history"] = state["history"]
        write_json_atomic(out / CONFIG_FILE, cfg)
        write_json_atomic(out / "training_summary.json", state)

    state = run_training(model, train_b, val_b, loop, save_final=save_final, desc=f"train-lstm ({args.variant})")
    for h in state["history"]:
        print(f"step {h['step']}: train loss {h['train_loss']}  val loss {h['val_loss']}")
    return 0
