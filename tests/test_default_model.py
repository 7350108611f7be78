"""The shipped default model and style adapters: present, small, used with no flags, exact across versions."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prompt_expander.loading import load_expander
from prompt_expander.paths import BUNDLED_LORAS, DEFAULT_MODEL

ROOT = Path(__file__).resolve().parent.parent

# Recorded with the shipped weights; .ci/run checks them under transformers 4.30.2 and the latest release.
EXPECTED = {
    ('woman portrait', 0, ()):
        'woman portrait, full face, highly detailed, digital painting, artstation, concept art, smooth, sharp focus, illustration, art by artgerm and greg rutkowski and alphonse mucha, 4k, 8k, hd, high quality, sharp, cinematic, dramatic lighting, high contrast, masterpiece, trending on artstation, award winning, hyper realism',
    ('woman portrait', 1, ()):
        'woman portrait, with white hair and black hair, fantasy, elegant, highly detailed, digital painting, artstation, concept art, smooth, sharp focus, illustration, art by artgerm and greg rutkowski and alphonse mucha, 8k, 85mm f 1.85, 35mm, art nouveau, trending on artstation, masterpiece',
    ('a castle on a hill', 7, ('photo',)):
        'a castle on a hill, a single white photo of a beautiful day landscape, high quality award winning photo, golden hour, trending on artstation, detailed, award - winning photography, amazing depth, intricate, golden ratio, 4k, hd, 8k, 80s style, highly detailed, dark atmosphere, by greg rutkowski',
    ('a castle on a hill', 7, ('anime',)):
        'a castle on a hill, cinematic shot, detailed anime style, illustration by yoshitaka amano, sharp high detail, manga and anime art, pastel color palette, dramatic lighting, high contrast, fantasy, trending on artstation, digital painting, concept art, by james jean, tom bagshaw, tom whalen, wlop, artgerm, ilya kuvshinov, krenz cushart',
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
