"""Exact outputs that must not change across transformers 4.30.2 (A1111), 4.46 (Forge) and 5.x (ComfyUI)."""

from prompt_expander.expansion.resident import load_expander

# Recorded once; .ci/run checks them under transformers 4.30.2, 4.46.1 and the latest release.
TINY_TOKENS = [82, 81, 278, 84, 67, 295, 281, 72, 264, 327, 81, 79, 266, 14, 380, 382, 14, 359, 77]
TINY_EXPANSIONS = {
    ('portrait of a woman', 0, 0.8): 'portrait of a woman, rleSH dcu` bane lighting.w rutkowskioth;armooth',
    ('portrait of a woman', 1, 0.8): 'portrait of a woman, moot in5d& shstationǼstationLkowskitailedokeh dmoat',
    ('portrait of a woman', 2, 0.8): 'portrait of a woman, wp sS gLnalill fofstation dle d&station',
    ('a castle', 5, 0.0): 'a castle, HHLceT the oT o smoothkikikiceki oަTstation',
}


def test_tiny_model_tokenizer_and_expansions_are_exact(tiny_model_dir):
    exp = load_expander(str(tiny_model_dir))
    assert exp.tokenizer.encode("portrait of a woman, highly detailed, 8k") == TINY_TOKENS
    for (text, seed, temperature), expected in TINY_EXPANSIONS.items():
        assert exp.expand(text, seed=seed, temperature=temperature).text == expected
