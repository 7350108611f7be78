"""The shipped default model and style adapters: present, small, used with no flags, exact across versions."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prompt_expander.expansion.resident import load_expander
from prompt_expander.paths import BUNDLED_LORAS, DEFAULT_MODEL

ROOT = Path(__file__).resolve().parent.parent

# Recorded with the shipped weights; .ci/run checks them under transformers 4.30.2 and the latest release.
EXPECTED = {
    ('woman portrait', 0, ()):
        'woman portrait, black and white, hyper-realistic, photo realistic, 4k, detailed, highly detailed, face, smooth, sharp focus, high definition, canon eos 50mm, unreal engine 5, ultra wide angle, 8k',
    ('woman portrait', 1, ()):
        'woman portrait, illustration, artstation, art by yoji shinkawa and mark brooks, detailed, art nouveau, alphonse mucha, concept art, 4k, 8k, trending on artstation, smooth, sharp focus, digital illustration, character design, volumetric lighting, fantasy artwork, ray tracing, artgerm, wlop, greg rutkowski, dan mumford',
    ('a castle on a hill', 7, ('photo',)):
        'a castle on a hill, a fantasy digital painting, 4k, high-resolution photograph, very realistic, very detailed, stunning, by greg rutkowski and thomas kinkade, trending on artstation, masterpiece, 8k, hd, high resolution, ultra detailed, good lighting, beautiful, gorgeous, elegant, art by stanley lau and artgerm',
    ('a castle on a hill', 7, ('anime',)):
        'a castle on a hill, a matte painting by studio ghibli, makoto shinkai, highly detailed, fantasy art, matte drawing, matte, digital painting, concept art, trending on artstation, smooth, sharp focus, vibrant colors, award winning artwork, breathtaking sky background, 4k, unreal engine 5, hyperrealistic, wlop, krenz cushart, pixiv',
}


def test_default_model_is_shipped_small_and_documented():
    weights = DEFAULT_MODEL / "model.safetensors"
    assert weights.is_file() and weights.stat().st_size <= 40 * 1024 * 1024
    card = (DEFAULT_MODEL / "README.md").read_text()
    for words in ("Data", "Tokenizer", "tokens seen", "machine", "bits per byte", "train-base"):
        assert words in card
    for style in ("photo", "anime"):
        assert (BUNDLED_LORAS / style / "adapter_model.safetensors").is_file()
        assert "base + this adapter" in (BUNDLED_LORAS / style / "README.md").read_text()


def test_cli_uses_the_default_model_with_no_flags():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "prompt_expander", "expand", "woman portrait"], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("woman portrait, ") and len(r.stdout.split()) > 8


@pytest.mark.parametrize("key", list(EXPECTED))
def test_shipped_expansions_are_exact(key):
    text, seed, styles = key
    result = load_expander(None).expand(text, seed=seed, styles=list(styles)).text
    assert result == EXPECTED[key]


def test_styles_shift_the_same_seed():
    exp = load_expander(None)
    plain = exp.expand("a castle on a hill", seed=7).added
    assert exp.expand("a castle on a hill", seed=7, styles=["photo"]).added != plain
    assert exp.expand("a castle on a hill", seed=7, styles=["anime"]).added != plain
