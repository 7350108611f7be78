"""Decode loops: a fast KV-cache loop for GPT-2 models, and the stock `generate()` path as reference."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from .sampling import RowDecoder


class FastGPT2:
    """A minimal GPT-2 forward over the live weights of a transformers GPT2LMHeadModel.

    It reads the module's parameters by reference, so a style switch that rewrites the weights in
    place is seen at once. Per step it runs only the matmuls, with a pre-allocated KV cache and none
    of generate()'s per-step bookkeeping.
    """

    SUPPORTED = ("gpt2",)

    def __init__(self, model):
        from transformers.activations import ACT2FN

        cfg = model.config
        if getattr(cfg, "model_type", None) not in self.SUPPORTED:
            raise TypeError(f"fast decode supports {self.SUPPORTED}, not {cfg.model_type}")
        if getattr(cfg, "scale_attn_by_inverse_layer_idx", False) or getattr(cfg, "reorder_and_upcast_attn", False):
            raise TypeError("fast decode does not support scale_attn_by_inverse_layer_idx/reorder_and_upcast_attn")
        t = model.transformer
        self.wte, self.wpe = t.wte.weight, t.wpe.weight
        self.blocks = list(t.h)
        self.ln_f = t.ln_f
        self.head = model.lm_head.weight
        self.n_head = cfg.n_head
        self.n_embd = cfg.n_embd
        self.head_dim = cfg.n_embd // cfg.n_head
        self.n_positions = cfg.n_positions
        self.scale = 1.0 / math.sqrt(self.head_dim) if getattr(cfg, "scale_attn_weights", True) else 1.0
        self.act = ACT2FN[cfg.activation_function]
        self.eps = cfg.layer_norm_epsilon
        self.k = self.v = None

    @staticmethod
    def _linear(x, conv):
        # transformers' Conv1D stores weight as [in, out]; addmm is what it computes, so results agree.
        shape = x.shape[:-1] + (conv.weight.shape[1],)
        return torch.addmm(conv.bias, x.reshape(-1, x.shape[-1]), conv.weight).view(shape)

    def _block(self, i, block, x, pos, length):
        b, t, _ = x.shape
        h = F.layer_norm(x, (self.n_embd,), block.ln_1.weight, block.ln_1.bias, self.eps)
        q, k, v = self._linear(h, block.attn.c_attn).split(self.n_embd, dim=2)
        q = q.view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        self.k[i][:, :, pos:pos + t] = k.view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        self.v[i][:, :, pos:pos + t] = v.view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        keys, values = self.k[i][:, :, :length], self.v[i][:, :, :length]
        a = F.scaled_dot_product_attention(q, keys, values, is_causal=t > 1, scale=self.scale)
        a = a.transpose(1, 2).reshape(b, t, self.n_embd)
        x = x + self._linear(a, block.attn.c_proj)
        h = F.layer_norm(x, (self.n_embd,), block.ln_2.weight, block.ln_2.bias, self.eps)
        return x + self._linear(self.act(self._linear(h, block.mlp.c_fc)), block.mlp.c_proj)

    def _forward(self, ids: torch.Tensor, pos: int) -> torch.Tensor:
        t = ids.shape[1]
        x = self.wte[ids] + self.wpe[pos:pos + t]
        for i, block in enumerate(self.blocks):
            x = self._block(i, block, x, pos, pos + t)
        x = F.layer_norm(x[:, -1], (self.n_embd,), self.ln_f.weight, self.ln_f.bias, self.eps)
        return x @ self.head.t()

    def prefill(self, context: torch.Tensor, rows: int, total_len: int) -> torch.Tensor:
        """Run the shared context once, then give each of `rows` rows its own copy of the cache."""
        shape = (1, self.n_head, total_len, self.head_dim)
        dev, dt = self.wte.device, self.wte.dtype
        self.k = [torch.empty(shape, device=dev, dtype=dt) for _ in self.blocks]
        self.v = [torch.empty(shape, device=dev, dtype=dt) for _ in self.blocks]
        logits = self._forward(context, 0)
        if rows > 1:
            self.k = [k.expand(rows, -1, -1, -1).contiguous() for k in self.k]
            self.v = [v.expand(rows, -1, -1, -1).contiguous() for v in self.v]
            logits = logits.expand(rows, -1)
        return logits

    def step(self, tokens: torch.Tensor, pos: int) -> torch.Tensor:
        return self._forward(tokens.view(-1, 1), pos)


@torch.inference_mode()
def decode_fast(model, context_ids: list[int], rows: RowDecoder, should_stop: Callable[[], None] | None = None):
    fast = getattr(model, "_prompt_expander_fast", None)
    if fast is None:
        fast = FastGPT2(model)
        model._prompt_expander_fast = fast
    device = fast.wte.device
    context = torch.tensor([context_ids], device=device)
    total = len(context_ids) + rows.max_new_tokens
    logits = fast.prefill(context, rows.n, total)
    pos = len(context_ids)
    while True:
        nxt = rows.choose(logits)
        if rows.all_done or pos >= total:
            break
        if should_stop is not None:
            should_stop()
        logits = fast.step(nxt, pos)
        pos += 1
    return rows


@torch.inference_mode()
def decode_reference(model, context_ids: list[int], rows: RowDecoder, should_stop: Callable[[], None] | None = None):
    """The same decisions through transformers' generate(): RowDecoder acts as its logits processor."""
    from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

    class Chooser(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if should_stop is not None:
                should_stop()
            choice = rows.choose(scores)
            out = torch.full_like(scores, -math.inf)
            out.scatter_(1, choice.view(-1, 1), 0.0)
            return out

    class Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return rows.all_done

    device = next(model.parameters()).device
    context = torch.tensor([context_ids] * rows.n, device=device)
    eos = rows.vocab.eos_id
    model.generate(context, attention_mask=torch.ones_like(context), do_sample=False, num_beams=1,
                   max_new_tokens=rows.max_new_tokens + 1, logits_processor=LogitsProcessorList([Chooser()]),
                   stopping_criteria=StoppingCriteriaList([Stop()]), pad_token_id=eos, eos_token_id=None)
    return rows
