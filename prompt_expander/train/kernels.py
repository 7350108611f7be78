"""Faster kernels for the same functions while a model trains: fused tanh-GELU, and eager attention on CPU."""
from __future__ import annotations

from contextlib import contextmanager

import torch


def _no_padding_warning(input_ids, attention_mask) -> None:
    return None


@contextmanager
def training_kernels(model, device: torch.device):
    """Run `model` on faster kernels inside the block, and put it back as it was after.

    Measured on the 2-core CPU of benchmarks/bench_train.py (a bf16 step of the default's shape):
    - GPT-2's `gelu_new` is tanh-GELU written as eight elementwise ops, each a pass over the MLP's
      activations forward and back; torch's fused GELU(approximate="tanh") is the same function in one.
    - On CPU, the eager attention of transformers ran forward and backward faster than SDPA's flash
      kernel at our 128-token context. On GPUs SDPA is the fast one, so it stays.
    Together they made a step about 1.3x faster. Neither changes a weight or what is saved. transformers'
    check for padding without an attention mask is skipped inside the block (why: below).
    """
    from transformers.activations import NewGELUActivation

    swapped = []  # (module, attribute, original)
    for module in model.modules():
        act = getattr(module, "act", None)
        if isinstance(act, NewGELUActivation):
            swapped.append((module, "act", act))
            module.act = torch.nn.GELU(approximate="tanh")
    if torch.device(device).type == "cpu":
        configs = {id(m.config): m.config for m in model.modules() if hasattr(m, "config")}
        for config in configs.values():
            # transformers 5 picks the attention function from the config at each call; older versions
            # fixed it when the model was built, and then this changes nothing.
            if getattr(config, "_attn_implementation", None) == "sdpa":
                swapped.append((config, "_attn_implementation", "sdpa"))
                config._attn_implementation = "eager"
    # Rows are padded only at their end and pads are left out of the loss, so under causal attention no pad
    # reaches a real token. transformers (4.31 on) still warns that "input_ids may be padded" at the first
    # padded batch, and tests each batch's ends for the pad id: on a GPU, a host sync every step.
    quiet = [m for m in model.modules() if hasattr(m, "warn_if_padding_and_no_attention_mask")]
    for module in quiet:
        module.warn_if_padding_and_no_attention_mask = _no_padding_warning
    try:
        yield model
    finally:
        for owner, name, original in reversed(swapped):
            setattr(owner, name, original)
        for module in quiet:
            del module.warn_if_padding_and_no_attention_mask  # the class's method again
