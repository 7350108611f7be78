"""The ComfyUI nodes: thin wiring from widgets to the core expander."""
from __future__ import annotations

from ..prompt_expander.errors import ExpanderError
from ..prompt_expander.limits import (MAX_CANDIDATES, MAX_CONTRAST, MAX_CONTRAST_WORDS, MAX_PICK_WORDS, MAX_VARIATIONS,
                                      MODELS_OWN, or_models_own)
from .comfy_model import (DEFAULT_CHOICE, ExpanderHandle, load_handle, lora_choices, model_choices, resolve_lora,
                          resolve_model)

CATEGORY = "prompt/expansion"
SEED_MAX = 0xFFFFFFFFFFFFFFFF

EXPAND_INPUTS = {
    "expander": ("PROMPT_EXPANDER", {"tooltip": "The prompt expander from Load Prompt Expander (plus any styles)."}),
    "text": ("STRING", {"multiline": True, "dynamicPrompts": False, "default": "",
                        "tooltip": "Your prompt. It is kept verbatim; the expansion is appended after it. "
                                   "Weights, <lora:...>, BREAK, wildcards and {a|b} are left untouched."}),
    "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True,
                     "tooltip": "Expansion seed: the same seed gives the same prompt on every machine."}),
    "creativity": ("FLOAT", {"default": 0.8, "min": 0.0, "max": 2.0, "step": 0.05,
                             "tooltip": "Sampling temperature. 0 = always the likeliest words (greedy)."}),
    "budget": ("INT", {"default": 0, "min": 0, "max": 225,
                       "tooltip": "CLIP tokens the expansion may add. 0 = fill the current 75-token chunk "
                                  "(or the next one if fewer than 20 tokens are left)."}),
    "safe_mode": ("BOOLEAN", {"default": True,
                              "tooltip": "Never add NSFW words. Your own words are never censored."}),
}
OPTIONAL_INPUTS = {
    "blocklist": ("STRING", {"multiline": True, "default": "",
                             "tooltip": "Words or artists never to add, comma- or line-separated."}),
    "negative": ("BOOLEAN", {"default": False,
                             "tooltip": "Treat the text as a negative prompt and add negative terms "
                                        "(models without negative behaviour refuse)."}),
    "contrast": ("FLOAT", {"default": 1.0, "min": 0.0, "max": MAX_CONTRAST, "step": 0.05,
                           "tooltip": "Concept-contrastive decoding: above 0, words your prompt makes likelier win "
                                      "over words any prompt would get, so the addition is about your subject. "
                                      "0 turns it off. About 1.1x the decode time."}),
    # Last: a saved workflow lists its widget values in order, and older ones stop before this.
    "candidates": ("INT", {"default": MODELS_OWN, "min": MODELS_OWN, "max": MAX_CANDIDATES,
                           "tooltip": "Sample this many additions and keep the one whose words are closest to your "
                                      "prompt's: more on-topic, at about this many times the decode work (little "
                                      "on a GPU). 1 = off; -1 = the model's own (the default: 6 for the shipped "
                                      "model, 1 for one whose card names none)."}),
    "pick_words": ("INT", {"default": MODELS_OWN, "min": MODELS_OWN, "max": MAX_PICK_WORDS,
                           "tooltip": "With candidates: decode them only to this many words, keep the most on-topic "
                                      "beginning and finish only that one: most of the whole pick's gain at a "
                                      "fraction of its time. 0 = every candidate decoded to its end; -1 = the "
                                      "model's own (the default: 16 for the shipped model, 0 for one whose card "
                                      "names none)."}),
    "contrast_words": ("INT", {"default": MODELS_OWN, "min": MODELS_OWN, "max": MAX_CONTRAST_WORDS,
                               "tooltip": "Contrast chooses only the addition's first this-many words, the model "
                                          "alone the rest: faster, and most of contrast's gain is in the first "
                                          "words. 0 = every word; -1 = the model's own (the default: 16 for the "
                                          "shipped model, every word for one whose card names none)."}),
}
HIDDEN = {"unique_id": "UNIQUE_ID", "extra_pnginfo": "EXTRA_PNGINFO", "prompt": "PROMPT"}


def _comfy():
    import comfy.model_management as mm
    return mm


def run_expansion(expander: ExpanderHandle, text, seed, creativity, budget, safe_mode, blocklist="", negative=False,
                  n=1, count=None, progress=None, contrast=0.0, candidates=MODELS_OWN, pick_words=MODELS_OWN,
                  contrast_words=MODELS_OWN):
    """Expand n variations (seeds seed..seed+n-1) under ComfyUI's memory manager and interrupt flag."""
    if not isinstance(expander, ExpanderHandle):
        raise ExpanderError("Prompt Expander: connect the output of Load Prompt Expander to 'expander'")
    exp = expander.ready()
    mm = _comfy()
    return exp.expand_many(text, n, seed, styles=expander.styles, temperature=creativity, budget=budget,
                           safe_mode=safe_mode, blocklist=blocklist, negative=negative, contrast=contrast,
                           contrast_words=or_models_own(contrast_words), candidates=or_models_own(candidates),
                           pick_words=or_models_own(pick_words), count=count,
                           should_stop=mm.throw_exception_if_processing_interrupted, on_progress=progress)


def record_in_metadata(unique_id, extra_pnginfo, prompt, expanded: list[str]) -> None:
    """Put the expanded text into the graph that SaveImage writes into the PNG (workflow and prompt)."""
    if unique_id is None:
        return
    value = expanded[0] if len(expanded) == 1 else expanded
    if isinstance(prompt, dict) and isinstance(prompt.get(str(unique_id)), dict):
        prompt[str(unique_id)].setdefault("inputs", {})["expanded_text"] = value
    workflow = (extra_pnginfo or {}).get("workflow") if isinstance(extra_pnginfo, dict) else None
    for node in (workflow or {}).get("nodes", []):
        if str(node.get("id")) == str(unique_id):
            node.setdefault("properties", {})["expanded_text"] = value


# ComfyUI's keys for the CLIP tokenizers (CLIP-L, CLIP-G, OpenCLIP-H): the 75-token chunks the budget means.
CLIP_TOKENIZERS = ("l", "g", "h")


def clip_counter(clip):
    """Count tokens with the connected text encoder's own CLIP tokenizer (ComfyUI marks real words with word
    ids), or None when it has none (T5 alone, or an LLM such as Qwen-Image's, whose chat template would be
    counted too): then the core's approximate CLIP count is used, and the text is Expand Prompt's."""
    probe = clip.tokenize("a", return_word_ids=True)
    key = next((k for k in CLIP_TOKENIZERS if k in probe), None) if isinstance(probe, dict) else None
    if key is None:
        return None

    def count(text: str) -> int:
        chunks = clip.tokenize(text, return_word_ids=True)[key]
        return sum(1 for chunk in chunks for item in chunk if len(item) > 2 and item[2])
    return count


DTYPE_TOOLTIP = ("auto = fp32 on GPU and CPU, so that a shared workflow's seed writes the same text on every "
                 "machine. fp16 and bf16 write other text for the same seed (different again between GPU and CPU "
                 "models); bf16 on CPU can be faster for many variations on CPUs with native bf16.")


class LoadPromptExpander:
    DESCRIPTION = "Loads a GPT-2 prompt expander once and keeps it resident under ComfyUI's memory manager."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("PROMPT_EXPANDER",)
    RETURN_NAMES = ("expander",)
    OUTPUT_TOOLTIPS = ("The loaded expander, for Expand Prompt nodes or Apply Expander Style.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (model_choices(), {"default": DEFAULT_CHOICE,
                                        "tooltip": "Bundled default, or a folder in models/prompt_expander."}),
            "device": (["auto", "cpu", "gpu"], {"default": "auto",
                                                "tooltip": "auto = where ComfyUI runs text encoders."}),
            "dtype": (["auto", "fp32", "fp16", "bf16"], {"default": "auto", "tooltip": DTYPE_TOOLTIP}),
        }}

    @classmethod
    def IS_CHANGED(cls, model, device, dtype):
        # The folder's file signature: a replaced model reloads, an unchanged one is a cache hit.
        from ..prompt_expander.model.loading import folder_signature
        try:
            return str(folder_signature(resolve_model(model)))
        except ExpanderError:
            return ""

    def load(self, model, device, dtype):
        return (load_handle(model, device, dtype),)


class ApplyExpanderStyle:
    DESCRIPTION = "Adds a LoRA style adapter to the expander. Stack several; the base is not reloaded."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("PROMPT_EXPANDER",)
    RETURN_NAMES = ("expander",)
    OUTPUT_TOOLTIPS = ("The same expander with this style added; the input expander is left as it was.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "expander": ("PROMPT_EXPANDER", {"tooltip": "The expander to style."}),
            "style": (lora_choices() or ["(no adapters found)"],
                      {"tooltip": "A LoRA from the bundled models/loras or models/prompt_expander/loras."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -2.0, "max": 2.0, "step": 0.05,
                                   "tooltip": "How strongly the style applies; 0 turns it off."}),
        }}

    def apply(self, expander, style, strength):
        path = resolve_lora(style)
        handle = expander.with_style(path, strength)
        expander.expander.load_adapter(str(path))  # load now, so a wrong base fails on this node
        return (handle,)


class ExpandPrompt:
    DESCRIPTION = "Appends a detailed, on-topic expansion to your prompt. Same inputs, same output."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("expanded", "added")
    OUTPUT_TOOLTIPS = ("Your prompt followed by the expansion.", "Only the added part.")
    FUNCTION = "expand"
    OUTPUT_NODE = False

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": dict(EXPAND_INPUTS), "optional": dict(OPTIONAL_INPUTS), "hidden": dict(HIDDEN)}

    def expand(self, expander, text, seed, creativity, budget, safe_mode, blocklist="", negative=False, contrast=0.0,
               candidates=MODELS_OWN, pick_words=MODELS_OWN, contrast_words=MODELS_OWN, unique_id=None,
               extra_pnginfo=None, prompt=None):
        r = run_expansion(expander, text, seed, creativity, budget, safe_mode, blocklist, negative,
                          contrast=contrast, candidates=candidates, pick_words=pick_words,
                          contrast_words=contrast_words)[0]
        record_in_metadata(unique_id, extra_pnginfo, prompt, [r.text])
        return {"ui": {"text": [r.text]}, "result": (r.text, r.added)}


class ExpandPromptEncode:
    DESCRIPTION = "Expand Prompt and CLIP Text Encode in one node; the budget is counted with its CLIP tokenizer."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("CONDITIONING", "STRING")
    RETURN_NAMES = ("conditioning", "expanded")
    OUTPUT_TOOLTIPS = ("The expanded prompt encoded by this CLIP, for a sampler.",
                       "Your prompt followed by the expansion.")
    FUNCTION = "expand_encode"

    @classmethod
    def INPUT_TYPES(cls):
        required = dict(EXPAND_INPUTS)
        required["clip"] = ("CLIP", {"tooltip": "The CLIP that encodes the expanded prompt and counts its tokens."})
        return {"required": required, "optional": dict(OPTIONAL_INPUTS), "hidden": dict(HIDDEN)}

    def expand_encode(self, expander, text, seed, creativity, budget, safe_mode, clip, blocklist="", negative=False,
                      contrast=0.0, candidates=MODELS_OWN, pick_words=MODELS_OWN, contrast_words=MODELS_OWN,
                      unique_id=None, extra_pnginfo=None, prompt=None):
        if clip is None:
            raise ExpanderError("Prompt Expander: the clip input is empty (does the checkpoint contain a CLIP?)")
        r = run_expansion(expander, text, seed, creativity, budget, safe_mode, blocklist, negative,
                          count=clip_counter(clip), contrast=contrast, candidates=candidates,
                          pick_words=pick_words, contrast_words=contrast_words)[0]
        record_in_metadata(unique_id, extra_pnginfo, prompt, [r.text])
        tokens = clip.tokenize(r.text)
        if hasattr(clip, "encode_from_tokens_scheduled"):
            cond = clip.encode_from_tokens_scheduled(tokens)
        else:  # older ComfyUI
            c, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
            cond = [[c, {"pooled_output": pooled}]]
        return {"ui": {"text": [r.text]}, "result": (cond, r.text)}


class ExpandPromptVariations:
    DESCRIPTION = "n expansions as a list (seeds seed..seed+n-1); item i equals Expand Prompt with seed+i."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("expanded", "added")
    OUTPUT_IS_LIST = (True, True)
    OUTPUT_TOOLTIPS = ("n expanded prompts; a node fed by this runs once for each.", "Only the added parts.")
    FUNCTION = "variations"

    @classmethod
    def INPUT_TYPES(cls):
        required = dict(EXPAND_INPUTS)
        required["variations"] = ("INT", {"default": 4, "min": 1, "max": MAX_VARIATIONS,
                                          "tooltip": "How many expansions; downstream nodes run once per item."})
        return {"required": required, "optional": dict(OPTIONAL_INPUTS), "hidden": dict(HIDDEN)}

    def variations(self, expander, text, seed, creativity, budget, safe_mode, variations, blocklist="",
                   negative=False, contrast=0.0, candidates=MODELS_OWN, pick_words=MODELS_OWN,
                   contrast_words=MODELS_OWN, unique_id=None, extra_pnginfo=None, prompt=None):
        import comfy.utils
        bar = comfy.utils.ProgressBar(100)
        results = run_expansion(expander, text, seed, creativity, budget, safe_mode, blocklist, negative,
                                n=variations, progress=lambda step, total: bar.update_absolute(
                                    min(100, int(100 * step / max(total, 1))), 100), contrast=contrast,
                                candidates=candidates, pick_words=pick_words, contrast_words=contrast_words)
        bar.update_absolute(100, 100)
        texts = [r.text for r in results]
        record_in_metadata(unique_id, extra_pnginfo, prompt, texts)
        return {"ui": {"text": texts}, "result": (texts, [r.added for r in results])}


NODE_CLASS_MAPPINGS = {
    "LoadPromptExpander": LoadPromptExpander,
    "ApplyExpanderStyle": ApplyExpanderStyle,
    "ExpandPrompt": ExpandPrompt,
    "ExpandPromptEncode": ExpandPromptEncode,
    "ExpandPromptVariations": ExpandPromptVariations,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadPromptExpander": "Load Prompt Expander",
    "ApplyExpanderStyle": "Apply Expander Style (LoRA)",
    "ExpandPrompt": "Expand Prompt",
    "ExpandPromptEncode": "Expand Prompt + Encode",
    "ExpandPromptVariations": "Expand Prompt Variations",
}
