"""Pieces host adapters share: a module that memory managers can move, and model choices by folder."""
from __future__ import annotations

import torch

from ..expansion.graphs import release_graphs


def offload_to_cpu(model) -> None:
    """Move a model to the CPU for a host that manages no memory itself (A1111), freeing its decode graphs first."""
    release_graphs(model)
    model.to("cpu")


class PromptExpanderModel(torch.nn.Module):
    """The GPT-2 wrapped with the writable `.device` that ComfyUI's and Forge's ModelPatcher assign. Its class
    name is what ComfyUI's console shows ("Requested to load PromptExpanderModel").

    transformers models expose `device` as a read-only property, which is why wrapping the bare
    model crashes with "property 'device' of 'GPT2LMHeadModel' object has no setter".
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.device = next(model.parameters()).device

    def get_dtype(self):
        return next(self.model.parameters()).dtype

    def _apply(self, *args, **kwargs):
        # A patcher moving the model (to offload it, say) leaves captured decode graphs reading freed
        # memory, and their own memory held: drop them first, so an offload really frees the GPU.
        release_graphs(self.model)
        return super()._apply(*args, **kwargs)
