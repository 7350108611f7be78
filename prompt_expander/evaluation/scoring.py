"""Scoring prompts with a language model: summed negative log-likelihood, tokens and bytes, streamed."""
from __future__ import annotations

import itertools
import math

import torch

from ..errors import DataError
from ..topics import TOPIC_TOKEN, tagged, topic_of

TOPIC_BYTES = TOPIC_TOKEN.encode("utf-8")


def encode_for_scoring(tok, text: str, lowercase: bool, max_len: int, topic_tags: bool = False):
    """Token ids exactly as in training: BOS + text + EOS, cut to the model's window.

    Returns (ids, bytes): the UTF-8 bytes the predicted tokens cover, with the EOS counted as one byte
    (the line break it stands for), so bits per byte compare across tokenizers. A topic-tagged model predicts
    the subject and the topic token too, so its bits count against the prompt's own bytes alone: the figure
    stays comparable with an untagged model's on the same prompts.
    """
    text = text.lower() if lowercase else text
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    overhead = 0  # bytes of the subject and the topic token: not the prompt's own
    if topic_tags:
        overhead = len(topic_of(text).encode("utf-8")) + len(TOPIC_BYTES)
        text = tagged(text)
    body = tok.encode(text, add_special_tokens=False)
    if len(body) + 2 <= max_len:
        return [bos, *body, tok.eos_token_id], len(text.encode("utf-8")) - overhead + 1
    body = body[: max_len - 1]
    return [bos, *body], max(len(tok.decode(body).encode("utf-8")) - overhead, 1)


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
    tags = getattr(meta, "topic_tags", False)
    return score_lines(model, lines, lambda t: (*encode_for_scoring(tok, t, meta.lowercase, max_len, tags), 0.0),
                       batch_size, progress)


def metrics_from_totals(nll: float, tokens: int, nbytes: int, prompts: int) -> dict:
    if tokens == 0:
        raise DataError("no prompts to evaluate (the file is empty)")
    ce = nll / tokens
    return {"cross_entropy": ce, "perplexity": math.exp(min(ce, 700.0)), "bits_per_byte": nll / math.log(2) / nbytes,
            "prompts": prompts, "tokens": tokens, "bytes": nbytes}
