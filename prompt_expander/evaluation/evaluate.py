"""`evaluate`: cross-entropy, perplexity and bits per byte of a model on a prompts file, streamed."""
from __future__ import annotations

import argparse
import itertools
import math
from pathlib import Path

import torch

from ..errors import DataError
from ..fileio import iter_lines, write_json_atomic, write_text_atomic


def encode_for_scoring(tok, text: str, lowercase: bool, max_len: int):
    """Token ids exactly as in training: BOS + text + EOS, cut to the model's window.

    Returns (ids, bytes): the UTF-8 bytes the predicted tokens cover, with the EOS counted as one byte
    (the line break it stands for), so bits per byte compare across tokenizers.
    """
    text = text.lower() if lowercase else text
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    body = tok.encode(text, add_special_tokens=False)
    if len(body) + 2 <= max_len:
        return [bos, *body, tok.eos_token_id], len(text.encode("utf-8")) + 1
    body = body[: max_len - 1]
    return [bos, *body], len(tok.decode(body).encode("utf-8"))


def score_batch(model, batch_ids, device) -> tuple[float, int]:
    """Summed token negative log-likelihood (nats) and predicted-token count of one batch."""
    width = max(len(x) for x in batch_ids)
    ids = torch.zeros((len(batch_ids), width), dtype=torch.long)
    labels = torch.full((len(batch_ids), width), -100, dtype=torch.long)
    for i, x in enumerate(batch_ids):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, 1: len(x)] = torch.tensor(x[1:])
    ids, labels = ids.to(device), labels.to(device)
    logits = model(input_ids=ids).logits.float()
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)),
                                            labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum")
    return nll.item(), int((labels != -100).sum())


@torch.inference_mode()
def score_lines(model, lines, encode, batch_size: int = 64, progress: bool = False) -> dict:
    """Stream `lines` through `model` in batches; `encode(text) -> (ids, bytes, extra nats)`."""
    from tqdm import tqdm

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nll, tokens, nbytes, prompts = 0.0, 0, 0, 0
    it = iter(lines)
    bar = tqdm(desc="evaluate", unit=" prompts", disable=not progress)
    while True:
        chunk = list(itertools.islice(it, batch_size))
        if not chunk:
            break
        encoded = [encode(t) for t in chunk]
        s, n = score_batch(model, [e[0] for e in encoded], device)
        nll += s + sum(e[2] for e in encoded)
        tokens, prompts, nbytes = tokens + n, prompts + len(chunk), nbytes + sum(e[1] for e in encoded)
        bar.update(len(chunk))
        bar.set_postfix(ce=f"{nll / max(tokens, 1):.3f}")
    bar.close()
    model.train(was_training)
    return metrics_from_totals(nll, tokens, nbytes, prompts)


def evaluate_lines(model, tok, meta, lines, batch_size: int = 64, progress: bool = False) -> dict:
    max_len = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", 1024)
    return score_lines(model, lines, lambda t: (*encode_for_scoring(tok, t, meta.lowercase, max_len), 0.0),
                       batch_size, progress)


def metrics_from_totals(nll: float, tokens: int, nbytes: int, prompts: int) -> dict:
    if tokens == 0:
        raise DataError("no prompts to evaluate (the file is empty)")
    ce = nll / tokens
    return {"cross_entropy": ce, "perplexity": math.exp(min(ce, 700.0)), "bits_per_byte": nll / math.log(2) / nbytes,
            "prompts": prompts, "tokens": tokens, "bytes": nbytes}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompts", help="prompts file (.txt or .txt.gz, one per line), streamed")
    p.add_argument("--model", default=None, help="model folder or hub id (default: models/default); LSTM folders work too")
    p.add_argument("--lora", action="append", default=[], help="adapter NAME or PATH[:WEIGHT]; repeatable")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--limit", type=int, default=0, help="score only the first N prompts")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="write the metrics as JSON here")
    p.add_argument("--markdown", help="write a one-row Markdown table here")


def evaluate_path(model_path, prompts, loras=(), batch_size=64, limit=0, device="cpu", progress=True) -> dict:
    from .lstm import is_lstm_folder, load_lstm

    lines = iter_lines(prompts, strict=True)
    if limit:
        lines = itertools.islice(lines, limit)
    if model_path and is_lstm_folder(model_path):
        lstm = load_lstm(model_path, device)
        result = lstm.evaluate_lines(lines, batch_size=batch_size, progress=progress)
        result["model"] = result["system"] = str(model_path)
        return result
    from ..expansion.resident import load_expander

    exp = load_expander(model_path, device=device, dtype="fp32")
    model = exp.model_for_style(exp.parse_styles(loras))
    result = evaluate_lines(model, exp.tokenizer, exp.meta, lines, batch_size, progress)
    result["model"] = exp.model_id
    result["loras"] = list(loras)
    result["system"] = " + ".join([exp.model_id, *map(str, loras)])  # what was scored: the base and its styles
    return result


def main(args) -> int:
    if not Path(args.prompts).is_file():
        raise DataError(f"{args.prompts}: no such file")
    r = evaluate_path(args.model, args.prompts, args.lora, args.batch_size, args.limit, args.device)
    print(f"model {r['system']}  prompts {r['prompts']}  tokens {r['tokens']}")
    print(f"cross-entropy {r['cross_entropy']:.4f}  perplexity {r['perplexity']:.2f}  bits/byte {r['bits_per_byte']:.4f}")
    if args.json:
        write_json_atomic(args.json, r)
    if args.markdown:
        write_text_atomic(args.markdown, "| model | CE | PPL | bits/byte | prompts | tokens |\n|---|---:|---:|---:|---:|---:|\n"
                          f"| {r['system']} | {r['cross_entropy']:.4f} | {r['perplexity']:.2f} | {r['bits_per_byte']:.4f} "
                          f"| {r['prompts']} | {r['tokens']} |\n")
    return 0
