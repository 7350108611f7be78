"""The shipped default model and style adapters: present, small, used with no flags, exact across versions."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prompt_expander.expansion.resident import load_expander
from prompt_expander.model.loading import cpu_has_native_bf16
from prompt_expander.paths import BUNDLED_LORAS, DEFAULT_MODEL

ROOT = Path(__file__).resolve().parent.parent

# Recorded with the shipped weights in fp32, what `auto` loads on every CPU; .ci/run checks them under
# transformers 4.30.2 and the latest release. The same strings came out on an AMD EPYC (AVX-512 BF16) and an
# Intel Xeon (AMX), with 1 or 2 threads. bf16 text differs between those CPUs, so it has no exact strings here.
EXPECTED = {
    ('woman portrait', 0, ()):
        'woman portrait, wearing a feathered cloak and a fancy hat, oil painting by rembrandt and van rijn, cinematic, dynamic pose, artstation, fantasy, dramatic, dynamic light, concept art, sharp, details, league of legends splash art, league outlines, octane render, 8k hd wallpaper, by ilya kuvshinov, artgerm',
    ('woman portrait', 1, ()):
        'woman portrait, wearing a feathered bird mask, with wings, wearing an old torn shirt, by donato giancola and nikolay makovsky and edwin longsden long and wlop, face by greg rutkowski, digital art, trending on artstation',
    ('a castle on a hill', 7, ('photo',)):
        'a castle on a hill, surrounded by mountains and golden buildings, high up angle, trending on artstation, cgsociety, octane render, 4k, unreal engine, cinematic, hyper realism, octane renderer, sharp focus, octane cinema 4d, fantasy style, volumetric lighting, epic light, award winning photography, ultra high quality image',
    ('a castle on a hill', 7, ('on-topic',)):
        'a castle on a hill, with a waterfall and mountains in the distance and a small bridge, trending on artstation, matte painting, digital painting, 8k, matte fantasy painting, hyperrealistic, cgsociety, rpg portrait, by artgerm, by simon stalenhag, by beeple, by greg rutkowski, by victor adame minguez by alphonse mucha',
    ('a castle on a hill', 7, ('anime',)):
        'a castle on a hill, surrounded by a small river, digital art, studio ghibli, makoto shinkai, by studio trigger, greg rutkowski and studio gainax and moebius, octane render, 4k, beautiful landscape, cinematic lighting, strong shadows, reflections, featured, trending on behance and artstation, very detailed',
}


def test_default_model_is_shipped_small_and_documented():
    weights = DEFAULT_MODEL / "model.safetensors"
    assert weights.is_file() and weights.stat().st_size <= 64 * 1000 * 1000
    card = (DEFAULT_MODEL / "README.md").read_text()
    for words in ("Data", "Tokenizer", "tokens seen", "machine", "bits per byte", "train-base"):
        assert words in card
    for style in ("photo", "anime", "on-topic"):
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
    assert load_expander(None).expand(text, seed=seed, styles=list(styles)).text == EXPECTED[key]


def test_auto_is_fp32_on_every_cpu_and_bf16_is_there_on_request():
    assert load_expander(None).model.dtype == torch.float32
    if not cpu_has_native_bf16():
        pytest.skip("bf16 is emulated on this CPU")
    exp = load_expander(None, dtype="bf16")
    assert exp.model.dtype == torch.bfloat16
    # bf16 text is this CPU's own, but still one per seed: the same twice, and variation i is seed + i
    first = [exp.expand("woman portrait", seed=s).text for s in (0, 1)]
    assert exp.expand("woman portrait", seed=0).text == first[0]
    assert [r.text for r in exp.expand_many("woman portrait", 2, seed=0)] == first


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("settings", [{}, {"candidates": 4}, {"candidates": 8, "pick_words": 20}])
def test_a_gpu_in_fp32_writes_the_cpus_text(settings):
    """auto is fp32 on a GPU too, its draws come from CPU generators and its decode runs with TF32 off, so a
    shared workflow writes the same prompt on either; in fp16 it did not for 53 of 90 seeds."""
    for text, seed, styles in EXPECTED:
        kw = dict(seed=seed, styles=list(styles), **settings)
        gpu = load_expander(None, device="cuda").expand(text, **kw).text
        assert gpu == load_expander(None).expand(text, **kw).text
    inputs = ["a lemon", "an owl at night", "a red fox in the snow", "portrait of an old sailor"]
    gpu = [r.text for text in inputs for r in load_expander(None, device="cuda").expand_many(text, 4, **settings)]
    assert gpu == [r.text for text in inputs for r in load_expander(None).expand_many(text, 4, **settings)]


def test_styles_shift_the_same_seed():
    exp = load_expander(None)
    plain = exp.expand("a castle on a hill", seed=7).added
    assert exp.expand("a castle on a hill", seed=7, styles=["photo"]).added != plain
    assert exp.expand("a castle on a hill", seed=7, styles=["anime"]).added != plain
    assert exp.expand("a castle on a hill", seed=7, styles=["on-topic"]).added != plain
