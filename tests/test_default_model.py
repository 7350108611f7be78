"""The shipped default model and style adapters: present, small, used with no flags, exact across versions."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prompt_expander.expansion.resident import load_expander
from prompt_expander.model.loading import cpu_has_native_bf16
from prompt_expander.paths import BUNDLED_LORAS, DEFAULT_MODEL

ROOT = Path(__file__).resolve().parent.parent

# Recorded with the shipped weights; .ci/run checks them under transformers 4.30.2 and the latest release.
# The default loads in bf16 on a CPU with native bf16 (its cpu_dtype), else in fp32: both are recorded.
EXPECTED = {
    ('bf16', 'woman portrait', 0, ()):
        'woman portrait, wearing a dress, art by ilya kuvshinov and wlop, digital art, highly detailed, dynamic shadows, 4k, realistic, octane render, trending on artstation, unreal engine, painterly style, trending, rich deep colors. art by artgerm, rossdraws, thomas kinkade, james gurney, norman rockwell, greg rutkowski',
    ('bf16', 'woman portrait', 1, ()):
        'woman portrait, wearing a dress made of flowers, art by studio ghibli and j. c. leyendecker and greg rutkowski, high detail, full-body shot, smooth, sharp focus, illustration, painting, concept art, masterpiece, cinematic, pinterest trending on artstation, artbook, wallpaper, intricately detailed, 8k, cozy background',
    ('bf16', 'a castle on a hill', 7, ('photo',)):
        'a castle on a hill, surrounded by mountains and golden buildings, high up angle, trending on artstation, 50mm, by noah bradley trending on cgsociety, deviantart, high detail, high definiton, realistic painting, hyper realistic, 4k hd wallpaper, realistic lighting, realistic cinematic, cinematic composition',
    ('bf16', 'a castle on a hill', 7, ('anime',)):
        'a castle on a hill, surrounded by mountains in the distance, landscape, cinematic, ray tracing, unreal engine, anime art style, 8k, octane render, hyper realistic, digital painting, art station, award winning, anime, vibrant, colorful, soft light, epic, by greg rutkowski, deviantart and instagram',
    ('fp32', 'woman portrait', 0, ()):
        'woman portrait, wearing a feathered cloak and a fancy hat, oil painting by rembrandt and van rijn, cinematic, dynamic pose, artstation, fantasy, dramatic, dynamic light, concept art, sharp, details, league of legends splash art, league outlines, octane render, 8k hd wallpaper, by ilya kuvshinov, artgerm',
    ('fp32', 'a castle on a hill', 7, ('photo',)):
        'a castle on a hill, surrounded by mountains and golden buildings, high up angle, trending on artstation, cgsociety, octane render, 4k, unreal engine, cinematic, hyper realism, octane renderer, sharp focus, octane cinema 4d, fantasy style, volumetric lighting, epic light, award winning photography, ultra high quality image',
}


def test_default_model_is_shipped_small_and_documented():
    weights = DEFAULT_MODEL / "model.safetensors"
    assert weights.is_file() and weights.stat().st_size <= 64 * 1000 * 1000
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
    dtype, text, seed, styles = key
    if dtype == "bf16" and not cpu_has_native_bf16():
        pytest.skip("the bf16 strings were recorded on a CPU that multiplies bf16 natively")
    result = load_expander(None, dtype=dtype).expand(text, seed=seed, styles=list(styles)).text
    assert result == EXPECTED[key]


def test_auto_is_bf16_where_the_cpu_runs_it_and_fp32_elsewhere():
    want = "torch.bfloat16" if cpu_has_native_bf16() else "torch.float32"
    assert str(load_expander(None).model.dtype) == want


def test_styles_shift_the_same_seed():
    exp = load_expander(None)
    plain = exp.expand("a castle on a hill", seed=7).added
    assert exp.expand("a castle on a hill", seed=7, styles=["photo"]).added != plain
    assert exp.expand("a castle on a hill", seed=7, styles=["anime"]).added != plain
