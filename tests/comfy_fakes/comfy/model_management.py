"""Test stand-in for comfy.model_management: records loads, offloads and interrupts."""
import torch

calls = []
interrupt_after = None  # raise on the N-th interrupt check
_checks = 0
loaded = []


class InterruptProcessingException(Exception):
    pass


def get_torch_device():
    return torch.device("cpu")


def text_encoder_device():
    return torch.device("cpu")


def text_encoder_offload_device():
    return torch.device("cpu")


def should_use_fp16(device=None, model_params=0, prioritize_performance=True, manual_cast=False):
    return False


def load_models_gpu(models, memory_required=0, **kw):
    for m in models:
        calls.append(("load", m.load_device))
        m.model.to(m.load_device)
        m.model.device = m.load_device  # what the real ModelPatcher.load does
        if m not in loaded:
            loaded.append(m)


def unload_all_models():
    for m in loaded:
        calls.append(("offload", m.offload_device))
        m.model.to(m.offload_device)
        m.model.device = m.offload_device
    loaded.clear()


def throw_exception_if_processing_interrupted():
    global _checks
    _checks += 1
    if interrupt_after is not None and _checks >= interrupt_after:
        raise InterruptProcessingException()


def reset():
    global interrupt_after, _checks
    calls.clear()
    loaded.clear()
    interrupt_after, _checks = None, 0
