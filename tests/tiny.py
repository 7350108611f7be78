"""Tiny in-process models and corpora for the tests: nothing is downloaded, nothing is shipped."""
from __future__ import annotations

import random
from pathlib import Path

SUBJECTS = ["portrait of a woman", "a castle on a hill", "a red fox in the snow", "cyberpunk city street",
            "an old man with a beard", "a cat wearing a hat", "mountain landscape at sunset", "a dragon flying",
            "a robot in a garden", "a ship on the ocean", "a forest cabin", "an astronaut on the moon"]
MODIFIERS = ["highly detailed", "digital painting", "artstation", "concept art", "sharp focus", "illustration",
             "by greg rutkowski", "by alphonse mucha", "8k", "octane render", "cinematic lighting", "oil on canvas",
             "trending on artstation", "smooth", "intricate", "elegant", "volumetric light", "matte painting",
             "photorealistic", "unreal engine", "studio lighting", "golden hour", "bokeh", "35mm photo"]


def corpus(n: int = 1500, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [", ".join([rng.choice(SUBJECTS)] + rng.sample(MODIFIERS, rng.randint(2, 7))) for _ in range(n)]


def make_tokenizer_files(folder: Path, lines, vocab_size: int = 400, n_positions: int = 64):
    from prompt_expander.train.tokenizer import save_gpt2_tokenizer, train_bpe

    tok = train_bpe(lines, vocab_size)
    save_gpt2_tokenizer(tok, folder, n_positions)


def make_model_dir(folder: Path, seed: int = 0, n_layer: int = 2, n_embd: int = 32, n_positions: int = 64,
                   lines=None, negative_vocab: bool = True) -> Path:
    """A random GPT-2 with our tokenizer and meta. Weights come from our own seeded generator, so they are
    identical under every transformers version (whose initialisers differ)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    from prompt_expander.fileio import write_json_atomic
    from prompt_expander.model.meta import META_FILE, ModelMeta

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    make_tokenizer_files(folder, lines or corpus(), n_positions=n_positions)
    tok = GPT2TokenizerFast.from_pretrained(str(folder))
    config = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=2, n_positions=n_positions, vocab_size=len(tok),
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                p.fill_(1.0)
            elif p.ndim == 1:
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    model.save_pretrained(str(folder), safe_serialization=True)
    meta = ModelMeta(lowercase=True)
    if negative_vocab:
        (folder / "negative_vocab.txt").write_text("blurry\nlowres\nwatermark\nbad anatomy\njpeg artifacts\n")
        meta.negative_vocabulary = "negative_vocab.txt"
    write_json_atomic(folder / META_FILE, meta.to_dict())
    return folder


def make_lora_dir(base_dir: Path, out: Path, seed: int, r: int = 4, targets=("c_attn", "c_proj", "c_fc")) -> Path:
    """A PEFT LoRA adapter with random (non-zero) A and B for the model in base_dir."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2LMHeadModel

    from prompt_expander.model.adapters import ADAPTER_META, base_fingerprint, base_probe
    from prompt_expander.fileio import write_json_atomic

    base = GPT2LMHeadModel.from_pretrained(str(base_dir))
    fp, probe = base_fingerprint(base), base_probe(base)
    peft_model = get_peft_model(base, LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets),
                                                 fan_in_fan_out=True, task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(peft_model.named_parameters()):
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    peft_model.peft_config["default"].base_model_name_or_path = str(base_dir.name)
    peft_model.save_pretrained(str(out), safe_serialization=True)
    write_json_atomic(Path(out) / ADAPTER_META, {"base_id": base_dir.name, "base_fingerprint": fp,
                                                        "base_probe": probe})
    return Path(out)
