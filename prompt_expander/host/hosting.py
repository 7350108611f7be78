"""Pieces host adapters share: a module that memory managers can move, and model choices by folder."""
from __future__ import annotations

import torch


class DeviceModule(torch.nn.Module):
    """The GPT-2 wrapped with the writable `.device` that ComfyUI's and Forge's ModelPatcher assign.

    transformers models expose `device` as a read-only property, which is why wrapping the bare
    model crashes with "property 'device' of 'GPT2LMHeadModel' object has no setter".
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.device = next(model.parameters()).device

    def get_dtype(self):
        return next(self.model.parameters()).dtype
