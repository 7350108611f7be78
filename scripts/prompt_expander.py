"""A1111/Forge script: expands every image's prompt with its own seed and records how, for paste-back."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import gradio as gr

from modules import script_callbacks, scripts, shared

EXTENSION_ROOT = Path(__file__).resolve().parent.parent


def _import_core():
    """Load our core package by path: putting the extension folder on sys.path could shadow A1111's own
    `scripts`/`modules` with this repository's folders."""
    name = "prompt_expander"
    existing = sys.modules.get(name)
    if existing is not None and Path(existing.__file__).resolve().parent == EXTENSION_ROOT / name:
        return existing
    if existing is not None:
        name = "prompt_expander_webui_extension"
    init = EXTENSION_ROOT / "prompt_expander" / "__init__.py"
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


core = _import_core()
webui = importlib.import_module(core.__name__ + ".host.webui")
limits = importlib.import_module(core.__name__ + ".limits")
resident = importlib.import_module(core.__name__ + ".expansion.resident")
hosting = importlib.import_module(core.__name__ + ".host.hosting")


def models_root() -> Path:
    from modules import paths
    return Path(paths.models_path) / "prompt_expander"


def _forge_memory():
    try:
        from backend import memory_management  # Forge only
        return memory_management
    except ImportError:
        return None


def pick_device():
    """GPU or CPU per the settings (under Forge, its text-encoder device), in the core's `auto` dtype: fp32 on a
    GPU, not the host's fp16, so that a seed writes the same text on every machine."""
    import torch
    from modules import devices
    loading = importlib.import_module(core.__name__ + ".model.loading")
    mem = _forge_memory()
    if getattr(shared.opts, "prompt_expander_device", "GPU") == "CPU":
        dev = torch.device("cpu")
    else:
        dev = mem.text_encoder_device() if mem is not None else devices.device
    return dev, loading.dtype_to_load_for(dev)


def get_expander(model_name: str):
    import torch
    device, dtype = pick_device()
    exp = resident.load_expander(str(webui.resolve_model(model_name, models_root())), device="cpu", dtype=dtype)
    mem = _forge_memory()
    if mem is not None and hasattr(mem, "load_models_gpu") and device.type != "cpu":
        try:
            from backend.patcher.base import ModelPatcher
            patcher = getattr(exp, "_forge_patcher", None)
            if patcher is None:
                patcher = exp._forge_patcher = ModelPatcher(hosting.PromptExpanderModel(exp.model),
                                                            load_device=device, offload_device=torch.device("cpu"))
            mem.load_models_gpu([patcher])
            return exp
        except Exception as e:  # an unexpected Forge API: fall back to moving the model ourselves
            print(f"[Prompt Expander] Forge memory manager not used: {e}")
    exp.model.to(device)
    return exp


def release(exp) -> None:
    """Offload to CPU after use unless the settings keep the model on the GPU."""
    if exp is None or getattr(shared.opts, "prompt_expander_keep_loaded", False):
        return
    if next(exp.model.parameters()).device.type != "cpu" and getattr(exp, "_forge_patcher", None) is None:
        hosting.offload_to_cpu(exp.model)
        from modules import devices
        devices.torch_gc()


class PromptExpanderScript(scripts.Script):
    def title(self):
        return "Prompt Expander"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        tab = "img2img" if is_img2img else "txt2img"
        root = models_root()
        default_model = getattr(shared.opts, "prompt_expander_default_model", webui.DEFAULT)
        try:
            from modules.ui_components import InputAccordion
            accordion = InputAccordion(False, label="Prompt Expander", elem_id=f"{tab}_prompt_expander")
            enabled = accordion
        except ImportError:  # older hosts: a checkbox inside a plain accordion
            accordion = gr.Accordion("Prompt Expander", open=False)
            enabled = None
        with accordion:
            if enabled is None:
                enabled = gr.Checkbox(False, label="Enable")
            with gr.Row():
                model = gr.Dropdown(webui.model_choices(root), value=default_model, label="Model")
                lora = gr.Dropdown(webui.lora_choices(root), value=webui.NO_LORA, label="Style LoRA")
                lora_strength = gr.Slider(-2.0, 2.0, value=1.0, step=0.05, label="Style strength")
            with gr.Row():
                temperature = gr.Slider(0.0, 2.0, value=0.8, step=0.05, label="Creativity (temperature; 0 = greedy)")
                budget = gr.Slider(0, 225, value=0, step=1, label="CLIP-token budget (0 = fill the current chunk)")
                contrast = gr.Slider(0.0, 2.0, value=1.0, step=0.05,
                                     label="Contrast (0 = off; favours words your prompt makes likelier)")
                candidates = gr.Slider(limits.MODELS_OWN, limits.MAX_CANDIDATES, value=limits.MODELS_OWN, step=1,
                                       label="Candidates (-1 = the model's own; 1 = off; keeps the most on-topic "
                                             "of this many)")
                pick_words = gr.Slider(limits.MODELS_OWN, limits.MAX_PICK_WORDS, value=limits.MODELS_OWN, step=1,
                                       label="Pick by first words (-1 = the model's own; 0 = the whole addition; "
                                             "with candidates, finish only the best start)")
                contrast_words = gr.Slider(limits.MODELS_OWN, limits.MAX_CONTRAST_WORDS, value=limits.MODELS_OWN,
                                           step=1, label="Contrast words (-1 = the model's own; 0 = every word; "
                                                         "N = the first N)")
            with gr.Row():
                seed_mode = gr.Radio([webui.SEED_PER_IMAGE, webui.SEED_FIXED], value=webui.SEED_PER_IMAGE,
                                     label="Expansion seed")
                fixed_seed = gr.Number(0, precision=0, label="Fixed expansion seed")
            with gr.Row():
                safe_mode = gr.Checkbox(True, label="Safe mode (never add NSFW words)")
                expand_negative = gr.Checkbox(False, label="Also expand the negative prompt")
                apply_hires = gr.Checkbox(True, label="Apply to hires-fix prompt")
            blocklist = gr.Textbox("", label="Blocklist (words or artists never to add, comma-separated)", lines=1)
        components = dict(enabled=enabled, model=model, lora=lora, lora_strength=lora_strength,
                          temperature=temperature, budget=budget, seed_mode=seed_mode, fixed_seed=fixed_seed,
                          safe_mode=safe_mode, blocklist=blocklist, expand_negative=expand_negative,
                          apply_hires=apply_hires, contrast=contrast, candidates=candidates, pick_words=pick_words,
                          contrast_words=contrast_words)
        readers = webui.infotext_keys()
        self.infotext_fields = [(components[name], reader) for name, reader in readers.items()]
        self.paste_field_names = list(webui.PASTE_KEYS)
        return [components[name] for name in webui.Options.__dataclass_fields__]

    def process(self, p, *args):
        opts = webui.enabled_options(p, args)
        if opts is None:
            return
        holder = {}

        def get():
            holder["exp"] = get_expander(opts.model)
            return holder["exp"]
        webui.process_safely(p, get, opts, models_root())
        release(holder.get("exp"))


def on_ui_settings():
    section = ("prompt_expander", "Prompt Expander")
    shared.opts.add_option("prompt_expander_default_model", shared.OptionInfo(
        webui.DEFAULT, "Default model", gr.Dropdown, lambda: {"choices": webui.model_choices(models_root())},
        section=section))
    shared.opts.add_option("prompt_expander_device", shared.OptionInfo(
        "GPU", "Run the expander on", gr.Radio, {"choices": ["GPU", "CPU"]}, section=section).info(
        "CPU saves VRAM; the model is small"))
    shared.opts.add_option("prompt_expander_keep_loaded", shared.OptionInfo(
        False, "Keep the model on the GPU between generations (otherwise offload to CPU after use)",
        section=section))


script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_infotext_pasted(lambda infotext, params: webui.restore_original(params))
