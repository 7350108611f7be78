"""Expansion behaviour: seeds, batches, the reference path, clean endings, bans and bad input."""
import subprocess
import sys
import textwrap

import pytest
import torch

from prompt_expander.errors import InputError, NegativeNotSupportedError
from prompt_expander.expansion.expander import DANGLING, strip_dangling, tidy_splits
from prompt_expander.expansion.sampling import normalise_seed, warp_logits
from prompt_expander.expansion.syntax import SYNTAX_CHARS


def test_same_seed_same_prompt_and_seeds_differ(expander):
    a = expander.expand("a castle on a hill", seed=42)
    assert a.text == expander.expand("a castle on a hill", seed=42).text
    others = {expander.expand("a castle on a hill", seed=s).added for s in range(6)}
    assert len(others) > 1


def test_variations_equal_singles(expander):
    many = expander.expand_many("portrait of a woman", 6, seed=100)
    for i, r in enumerate(many):
        single = expander.expand("portrait of a woman", seed=100 + i)
        assert r.text == single.text and r.seed == single.seed == 100 + i


def test_counting_added_words_only_gives_the_same_expansions(expander):
    """Our counter is told apart by identity: a wrapper of it makes every row be counted whole each time."""
    from prompt_expander.expansion.budget import approx_clip_tokens
    for text, budget in (("portrait of a woman", 0), ("a red fox in the snow, " * 6, 0), ("a castle", 12)):
        fast = expander.expand_many(text, 4, seed=7, budget=budget)
        whole = expander.expand_many(text, 4, seed=7, budget=budget, count=lambda s: approx_clip_tokens(s))
        assert [r.text for r in fast] == [r.text for r in whole]


def test_fast_path_equals_stock_generate(expander):
    for temperature in (0.0, 0.9):
        fast = expander.expand_many("a red fox in the snow", 3, seed=5, temperature=temperature)
        ref = expander.expand_many("a red fox in the snow", 3, seed=5, temperature=temperature, fast=False)
        assert [r.text for r in fast] == [r.text for r in ref]


def test_warpers_match_transformers():
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper
    logits = torch.randn(4, 300, generator=torch.Generator().manual_seed(0))
    ours = warp_logits(logits, 0.7, 20, 0.8)
    ref = TopPLogitsWarper(0.8)(None, TopKLogitsWarper(20)(None, TemperatureLogitsWarper(0.7)(None, logits.clone())))
    assert torch.equal(torch.isinf(ours), torch.isinf(ref))
    assert torch.allclose(ours[~torch.isinf(ours)], ref[~torch.isinf(ref)])


def test_sampling_distribution_matches_softmax():
    from prompt_expander.expansion.sampling import gumbel_rows
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    for _ in range(20000):
        counts[(logits + gumbel_rows([g], 4)[0]).argmax()] += 1
    assert torch.allclose(counts / counts.sum(), logits.softmax(0), atol=0.015)


def test_seed_normalisation():
    assert normalise_seed(-1) == 2**64 - 1
    assert normalise_seed(2**64 + 5) == 5
    assert normalise_seed(10**40) == 10**40 % 2**64
    assert normalise_seed("12") == 12
    with pytest.raises(InputError):
        normalise_seed(1.5)


def test_negative_and_huge_seeds_work(expander):
    assert expander.expand("a cat", seed=-5).seed == 2**64 - 5
    assert expander.expand("a cat", seed=10**30).seed == 10**30 % 2**64


def test_seed_is_deterministic_across_processes(tiny_model_dir):
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(__import__('pathlib').Path(__file__).resolve().parent.parent)!r})
        from prompt_expander.expansion.resident import load_expander
        print(load_expander({str(tiny_model_dir)!r}).expand("a dragon flying", seed=1234).text)
    """)
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    assert outs[0] == outs[1] and outs[0].startswith("a dragon flying")


def test_clean_endings(expander):
    for seed in range(20):
        added = expander.expand("portrait of a woman", seed=seed, budget=10).added
        if added:
            assert not added.endswith((",", " ")), added
            assert added.split()[-1].lower() not in DANGLING, added


def test_tidy_splits_joins_split_digits_and_hyphens_but_not_words():
    assert tidy_splits("8 k, 8 0 s, f 1. 4, c 4 d, ue 5") == "8k, 80s, f 1.4, c4d, ue5"
    assert tidy_splits("a 4 k photo, 1 9 2 0 s") == "a 4k photo, 1920s"
    assert tidy_splits("unreal engine 5, cinema 4 d") == "unreal engine 5, cinema 4d"
    assert tidy_splits("award - winning, sci - fi, hyper - realistic, t - shirt") == \
        "award-winning, sci-fi, hyper-realistic, t-shirt"
    assert tidy_splits("a cat - digital art, 1 - 2") == "a cat - digital art, 1 - 2"


def test_strip_dangling():
    assert strip_dangling("castle, art by") == "castle"
    assert strip_dangling("a, b and, ") == "a, b"
    assert strip_dangling("oil painting in the style of") == "oil painting"
    assert strip_dangling("anime style") == "anime style"


def test_no_modifier_or_input_word_repeated(expander):
    for seed in range(15):
        r = expander.expand("highly detailed castle", seed=seed, temperature=1.2)
        segments = [s.strip() for s in r.added.split(",") if s.strip()]
        assert len(segments) == len(set(segments))
        assert "castle" not in r.added.lower().split()
        assert "highly detailed" not in segments


def test_blocklist_and_safe_mode(expander):
    pushed = dict(positive_vocab=["nude", "castle"], positive_bias=40.0, temperature=0.0)
    unsafe = expander.expand("a ship on the ocean", seed=3, safe_mode=False, **pushed)
    assert "nude" in unsafe.added
    safe = expander.expand("a ship on the ocean", seed=3, safe_mode=True, **pushed)
    assert "nude" not in safe.added
    blocked = expander.expand("a ship on the ocean", seed=3, safe_mode=False, blocklist="nude, castle", **pushed)
    assert "nude" not in blocked.added and "castle" not in blocked.added


def test_safe_mode_never_censors_the_user(expander):
    r = expander.expand("nude statue in a museum", seed=1)
    assert r.text.startswith("nude statue in a museum")


def test_negative_mode(expander, tmp_path):
    r = expander.expand("blurry, watermark", seed=2, negative=True)
    assert r.text.startswith("blurry, watermark")
    assert "blurry" not in r.added and r.added
    assert r.added == expander.expand("blurry, watermark", seed=2, negative=True).added


def test_negative_mode_refused_without_support(tmp_path):
    import tiny
    from prompt_expander.expansion.resident import load_expander
    exp = load_expander(str(tiny.make_model_dir(tmp_path / "noneg", negative_vocab=False)))
    with pytest.raises(NegativeNotSupportedError, match="no negative-prompt behaviour"):
        exp.expand("ugly", negative=True)


def test_result_object(expander):
    r = expander.expand("a cat", seed=9, temperature=0.5)
    d = r.to_dict()
    assert d["original"] == "a cat" and d["seed"] == 9 and d["model"] == "tiny-gpt2"
    assert d["settings"]["temperature"] == 0.5 and d["clip_budget"] == 73
    assert d["text"] == str(r)


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_text_is_a_clear_error(expander, text):
    with pytest.raises(InputError, match="empty"):
        expander.expand(text)


@pytest.mark.parametrize("text", [
    "x" * 100_000, "word " * 20_000, "ctrl\x00\x01\x1b[31m chars", "🐱🔥 emoji cat", "שלום עולם portrait",
    "((unbalanced [brackets {here", "<lora:x:1>", "embedding:foo", "BREAK", "a\r\nmulti\nline\nprompt",
])
def test_odd_input_gives_a_result(expander, text):
    r = expander.expand(text, seed=1)
    assert r.text.startswith(text.rstrip().rstrip(",").rstrip())
    assert not set(r.added) & SYNTAX_CHARS


@pytest.mark.parametrize("kw,match", [
    ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"top_k": -1}, "top_k"),
    ({"temperature": float("nan")}, "temperature"), ({"budget": -3}, "budget"),
])
def test_bad_settings_are_clear_errors(expander, kw, match):
    with pytest.raises(InputError, match=match):
        expander.expand("a cat", **kw)


def test_greedy_ignores_seed(expander):
    assert expander.expand("a cat", seed=1, temperature=0).added == expander.expand("a cat", seed=2, temperature=-1).added


def test_progress_and_interrupt_hooks(expander):
    from prompt_expander.errors import Interrupted
    seen = []
    expander.expand("a cat", seed=1, on_progress=lambda step, total: seen.append(step))
    assert seen and seen == sorted(seen)

    def stop():
        raise Interrupted("stop")
    with pytest.raises(Interrupted):
        expander.expand("a cat", seed=1, should_stop=stop)


@pytest.mark.parametrize("kept_words, want", [
    (" highly detailed, by greg", " highly detailed"),  # "rutkowski" came next: half an artist is dropped
    (" highly detailed, by greg rutkowski", " highly detailed, by greg rutkowski"),  # "and" came next
    (" highly detailed,", " highly detailed,"),  # a comma came next
    (" highly detailed, by greg rutkowski and alphonse mucha", " highly detailed, by greg rutkowski and alphonse mucha"),
])
def test_a_cut_row_ends_on_a_whole_modifier(kept_words, want, full=" highly detailed, by greg rutkowski and alphonse mucha"):
    from prompt_expander.expansion.resident import load_expander
    from prompt_expander.expansion.sampling import RowDecoder
    from prompt_expander.expansion.vocab import BanTable
    exp = load_expander()  # the shipped model's tokenizer
    rows = RowDecoder(exp.vocab, BanTable(), [0], temperature=0.8, top_k=50, top_p=0.95, budget=75, count=len,
                      separator=", ", min_new_tokens=0, max_new_tokens=64)
    rows.tokens[0] = exp.tokenizer.encode(full, add_special_tokens=False)
    rows.clean_len[0] = len(exp.tokenizer.encode(kept_words, add_special_tokens=False))
    assert exp.vocab.decode(rows.tokens[0][:rows.clean_len[0]]) == kept_words  # a word boundary of `full`
    assert rows.row_text(0) == want


def test_a_banned_repeat_spelled_another_way_leaves_its_modifier_out():
    """After "unreal engine", the pair ban keeps " engine" from following " unreal" again; the model then began the
    word as " eng" and wrote a comma: "unreal engine, ..., unreal eng". Such a modifier is left out of the text."""
    from prompt_expander.expansion.resident import load_expander
    from prompt_expander.expansion.sampling import RowDecoder
    from prompt_expander.expansion.vocab import BanTable
    exp = load_expander()  # the shipped model's tokenizer
    encode = lambda text: exp.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    engine, eng = encode(" engine"), encode(" eng")
    assert len(engine) == len(eng) == 1 and exp.vocab.respells(eng[0], set(engine))

    def decoder():
        return RowDecoder(exp.vocab, BanTable(), [0], temperature=0, top_k=50, top_p=0.95, budget=75, count=len,
                          separator=", ", min_new_tokens=0, max_new_tokens=64)
    rows = decoder()
    for tok in encode(" unreal engine, 4k, unreal"):
        rows._advance(0, tok)
    logits = torch.zeros((1, exp.model.config.vocab_size))
    logits[0, engine[0]], logits[0, eng[0]] = 20.0, 10.0
    assert rows.choose(logits).item() == eng[0]  # the banned word, begun another way
    for tok in encode(", vibrant colors"):
        rows._advance(0, tok)
    rows.clean_len[0] = len(rows.tokens[0])
    assert rows.respelled[0] == {2}
    assert rows.row_text(0) == " unreal engine, 4k, vibrant colors"
    fresh = decoder()
    fresh.replay(rows, 0)  # the pick by first words goes on with it
    assert fresh.respelled[0] == {2}


def test_a_row_whose_only_modifier_was_cut_keeps_it():
    test_a_cut_row_ends_on_a_whole_modifier(" by greg", " by greg", full=" by greg rutkowski")


def test_a_model_with_known_words_drops_broken_modifiers_but_keeps_the_users_words():
    from prompt_expander.expansion.expander import Expander
    from prompt_expander.expansion.syntax import parse_prompt
    from prompt_expander.wordlists import WordMatcher
    known = frozenset({"highly", "detailed", "by", "and", "greg", "rutkowski", "sharp", "focus", "render",
                       "close", "up", "close-up"})
    added = "highly detailed, by greg rutkowski and antonio corc, 12024, zorblax render, c 4 d, sharp focus, close - up"
    finish = Expander.finish
    args = (10**6, len, WordMatcher([]), parse_prompt("a zorblax"))
    assert finish(added, *args, known, ["a zorblax"]) == "highly detailed, zorblax render, c4d, sharp focus, close-up"
    assert finish(added, *args, known, ["a zorblax", "antonio corc"]) == \
        "highly detailed, by greg rutkowski and antonio corc, zorblax render, c4d, sharp focus, close-up"
    # no list: only the usual tidy-up ("close" is one of the prefixes it always joins)
    assert finish(added, *args) == added.replace("c 4 d", "c4d").replace("close - up", "close-up")


def test_known_words_are_read_once_and_a_missing_file_is_a_clear_error(tiny_model_dir, tmp_path):
    import json
    import shutil

    from prompt_expander.errors import ModelLoadError
    from prompt_expander.expansion.resident import load_expander
    from prompt_expander.fragments import write_known_words
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    meta = json.loads((folder / "prompt_expander.json").read_text()) if (folder / "prompt_expander.json").exists() else {}
    (folder / "prompt_expander.json").write_text(json.dumps({**meta, "known_words": "words.gz"}))
    with pytest.raises(ModelLoadError, match="known words"):
        load_expander(str(folder)).expand("a castle", seed=1)
    write_known_words(folder / "words.gz", ["castle", "hill"])
    exp = load_expander(str(folder))
    assert exp.known_words() == {"castle", "hill"} and exp.known_words() is exp.known_words()
    for seed in range(3):  # a random model's words are all unknown: everything it adds is dropped
        assert exp.expand("a castle", seed=seed).added == ""


def test_period_joined_modifiers_are_checked_one_by_one_and_come_back_comma_joined():
    from prompt_expander.expansion.expander import Expander
    from prompt_expander.expansion.syntax import parse_prompt
    from prompt_expander.wordlists import WordMatcher
    known = frozenset({"trending", "on", "artstation", "hd", "masterpiece", "sharp", "focus", "by", "ralph"})
    added = "trending on artstation hd. masterpiece. by ralph mcquarrie, masterpiece. sharp focus."
    args = (10**6, len, WordMatcher([]), parse_prompt("a tornado"))
    # the repeat of "masterpiece" goes, and only the modifier with the unknown word, not its whole sentence run
    assert Expander.finish(added, *args, known) == "trending on artstation hd, masterpiece, sharp focus"
    assert Expander.finish(added, *args) == "trending on artstation hd, masterpiece, by ralph mcquarrie, sharp focus"


def test_an_and_item_that_only_repeats_its_modifier_is_dropped_from_the_addition():
    """Seen in the default's output: "wearing sunglasses and a top hat and sunglasses", "his muscles and muscles"."""
    from prompt_expander.expansion.expander import Expander
    from prompt_expander.expansion.syntax import parse_prompt
    from prompt_expander.wordlists import WordMatcher
    added = "wearing sunglasses and a top hat and sunglasses, his muscles and muscles, pencil drawing and ink drawing"
    args = (10**6, len, WordMatcher([]), parse_prompt("a man"))
    assert Expander.finish(added, *args) == \
        "wearing sunglasses and a top hat, his muscles, pencil drawing and ink drawing"


def test_a_modifier_inside_an_earlier_one_is_dropped_from_the_addition():
    """Seen in the default's output: "by wlop, ..., wlop", "pixar zootopia, zootopia", "octane render, ..., octane"."""
    from prompt_expander.expansion.expander import Expander
    from prompt_expander.expansion.syntax import parse_prompt
    from prompt_expander.wordlists import WordMatcher
    added = ("by wlop, digital art, 3d art, octane render, wlop, red dress, long hair, red hair, octane, "
             "trending on artstation, trending in artstation, artstation, 4k hd, 4k")
    args = (10**6, len, WordMatcher([]), parse_prompt("a woman"))
    # "3d art" and "red hair" each say something no one earlier modifier said, and stay
    assert Expander.finish(added, *args) == \
        "by wlop, digital art, 3d art, octane render, red dress, long hair, red hair, trending on artstation, 4k hd"


@pytest.mark.parametrize("candidates, contrast", [(1, 0.0), (1, 1.0), (3, 1.0)])
def test_subjects_decoded_together_are_expansions_of_each_with_its_seed(expander, candidates, contrast):
    """expand_subjects shares decode steps among different texts; each result is still its text's expansion with
    seed + i, and the same call gives the same texts."""
    texts = ["a castle on a hill", "fox", "an old (harbour:1.2) at dawn", "a red fox sleeping in the snow"]
    results = expander.expand_subjects(texts, seed=7, candidates=candidates, contrast=contrast)
    assert [r.original for r in results] == texts and [r.seed for r in results] == [7, 8, 9, 10]
    assert all(r.text.startswith(t) for r, t in zip(results, texts))  # the user's text survives verbatim
    assert all(r.settings["candidates"] == candidates and r.settings["contrast"] == contrast for r in results)
    again = expander.expand_subjects(texts, seed=7, candidates=candidates, contrast=contrast)
    assert [r.text for r in again] == [r.text for r in results]
    # Not promised (attention spans the longest row), but on this model's rows the bits agree.
    alone = [expander.expand(t, seed=7 + i, candidates=candidates, contrast=contrast).text for i, t in enumerate(texts)]
    assert sum(a == r.text for a, r in zip(alone, results)) >= 3


def test_subjects_decoded_together_refuse_what_they_cannot_do(expander):
    from prompt_expander.errors import InputError
    from prompt_expander.limits import MAX_ROWS
    with pytest.raises(InputError, match="text 1 is empty"):
        expander.expand_subjects(["fox", "  "])
    with pytest.raises(InputError, match="rows"):
        expander.expand_subjects(["fox"] * (MAX_ROWS // 4 + 1), candidates=4)
    with pytest.raises(InputError, match="use expand"):
        expander.expand_subjects(["fox"], negative=True)
    with pytest.raises(InputError, match="list of texts"):
        expander.expand_subjects("fox")
    assert expander.expand_subjects([]) == []
