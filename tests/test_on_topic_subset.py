"""train-lora --select-on-topic: which prompts count as on-topic, and how the subset files are kept."""
import argparse
import json

import pytest
import torch

from prompt_expander.train import on_topic_subset
from prompt_expander.train.lora import _style_files
from prompt_expander.train.on_topic_subset import (SubsetScorer, modifier_subjects, select_on_topic,
                                                   subject_and_addition, without_subject_words)

from test_on_topic import WordTokenizer
from test_training import cli, data_dir, base_model  # noqa: F401 - module fixtures

WORDS = ["lemon", "citrus", "slice", "castle", "tower", "stone", "art", "detailed", "x"]
EMBEDDINGS = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.8, 0.0, 0.2], [0.0, 1.0, 0.0], [0.1, 0.9, 0.0],
                           [0.0, 0.8, 0.2], [0.0, 0.0, 1.0], [0.1, 0.1, 0.9], [0.3, 0.3, 0.3]])
ON_LEMON = "lemon, citrus slice, citrus slice, art detailed, art x"
OFF_LEMON = "lemon, castle tower, stone art, detailed x, art castle"
ON_CASTLE = "castle, tower stone, tower stone, art detailed, x art"
OFF_CASTLE = "castle, citrus slice, lemon art, detailed x, art citrus"


def test_a_prompt_counts_when_it_has_a_short_subject_and_a_varied_addition():
    assert subject_and_addition(ON_LEMON) == ("lemon", "citrus slice, citrus slice, art detailed, art x")
    assert subject_and_addition("a lemon on a table, " + ON_LEMON.split(", ", 1)[1]) is None  # 5-word subject
    assert subject_and_addition("lemon, citrus slice, art") is None  # 4 words added
    assert subject_and_addition("lemon citrus slice art detailed art x stone castle") is None  # no comma
    assert subject_and_addition("gorillaz, gorillaz, gorillaz, gorillaz, gorillaz, gorillaz, gorillaz, art, x") is None


def test_the_subjects_own_words_do_not_count_for_it():
    assert without_subject_words("A Lemon", "lemon slice, a lemon's art, lemon.") == "slice, lemon's art,"


def test_an_addition_about_its_own_subject_scores_above_one_about_another():
    scorer = SubsetScorer(WordTokenizer(WORDS), EMBEDDINGS, lowercase=True, bank=["lemon", "castle"])
    pairs = [subject_and_addition(line) for line in (ON_LEMON, OFF_LEMON, ON_CASTLE, OFF_CASTLE)]
    on_lemon, off_lemon, on_castle, off_castle = scorer.scores(pairs).tolist()
    assert on_lemon > off_lemon and on_castle > off_castle
    assert scorer.scores([("lemon", "lemon unknown words here")]).tolist() == [-float("inf")]


def test_the_share_kept_is_the_best_scoring_in_file_order_and_val_uses_trains_threshold(tmp_path):
    train, val = tmp_path / "train.txt", tmp_path / "val.txt"
    train.write_text("\n".join([OFF_LEMON, ON_CASTLE, "no comma here at all", ON_LEMON, OFF_CASTLE]) + "\n")
    val.write_text("\n".join([OFF_CASTLE, ON_LEMON]) + "\n")
    kept_train, kept_val, _ = select_on_topic(train, val, tmp_path, 0.5, WordTokenizer(WORDS), EMBEDDINGS, True)
    assert kept_train.read_text().splitlines() == [ON_CASTLE, ON_LEMON]
    assert kept_val.read_text().splitlines() == [ON_LEMON]
    (tmp_path / "none.txt").write_text("a lemon on a table, citrus\n")
    with pytest.raises(ValueError, match="1 to 3 words"):
        select_on_topic(tmp_path / "none.txt", None, tmp_path, 0.5, WordTokenizer(WORDS), EMBEDDINGS, True)


def test_a_first_phrase_that_prompts_mostly_write_later_is_a_style_not_a_subject(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("\n".join(["concept art, a castle", "a castle, concept art, lemon", "lemon, concept art",
                               "x, concept art, concept art", "y, Concept Art", "z, concept art"]) + "\n")
    # "concept art": first once, later 6 times (over 4x); "lemon": first once, later once; "a castle" 1 and 1
    assert modifier_subjects(path) == {"concept art"}


def test_a_style_is_known_whatever_spaces_it_is_written_with(tmp_path):
    """self_distill.subject_of collapses a subject's spaces, so the styles it is checked against must too."""
    path = tmp_path / "train.txt"
    path.write_text("\n".join(["concept  art , a castle", "a castle, concept art", "lemon, concept\tart",
                               "x, concept art", "y, concept   art", "z, concept art"]) + "\n")
    assert modifier_subjects(path) == {"concept art"}


def test_prompts_opening_with_a_style_are_left_out_and_a_subject_keeps_only_its_best(tmp_path, monkeypatch):
    monkeypatch.setattr(on_topic_subset, "PER_SUBJECT", 1)
    on_lemon_too = "lemon, citrus slice, citrus art, art detailed, art x"
    style = "art, citrus slice, citrus slice, art detailed, lemon x"
    fillers = ["a, art", "b, art", "c, art", "d, art", "e, art"]  # "art" is written later 5 times
    train = tmp_path / "train.txt"
    train.write_text("\n".join([on_lemon_too, style, ON_CASTLE, ON_LEMON, OFF_CASTLE] + fillers) + "\n")
    kept, _, _ = select_on_topic(train, None, tmp_path, 1.0, WordTokenizer(WORDS), EMBEDDINGS, True)
    # one prompt per subject, the best-scoring one, in file order; the prompt that opens with "art" is out
    assert kept.read_text().splitlines() == [ON_CASTLE, ON_LEMON]


def test_a_subset_is_rebuilt_when_the_keywords_change(tmp_path):
    (tmp_path / "train.txt").write_text("a castle, art\na fox, art\n")
    args = argparse.Namespace(data=str(tmp_path), val=None, select="castle", select_on_topic=None)
    train, _ = _style_files(args, tmp_path / "run")
    assert train.read_text() == "a castle, art\n"
    args.select = "fox"
    train, _ = _style_files(args, tmp_path / "run")
    assert train.read_text() == "a fox, art\n"
    assert json.loads((tmp_path / "run" / "cache" / "selection.json").read_text())["select"] == "fox"


def test_train_lora_trains_a_style_on_the_on_topic_subset(base_model, data_dir, tmp_path):  # noqa: F811
    out = tmp_path / "focus"
    r = cli("train-lora", data_dir, "--base", base_model, "--out", out, "--select-on-topic", "0.5", "--r", "4",
            "--steps", "4", "--batch-size", "4", "--eval-every", "4", "--save-every", "4", "--precision", "fp32")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "on-topic subset: the 50% of scoreable prompts" in r.stdout
    card = (out / "README.md").read_text()
    assert "the 50% of prompts with a 1-3-word subject" in card and "--select-on-topic 0.5 " in card
    assert "is a style, not a subject, and each subject keeps at most its best 8" in card
    # a subset chosen by another rule is not reused
    assert json.loads((out / "cache" / "selection.json").read_text())["rule"] == {"modifier_ratio": 4, "per_subject": 8}
    kept = (out / "cache" / "train.on_topic.txt").read_text().splitlines()
    assert kept and all(subject_and_addition(line) for line in kept)
    assert json.loads((out / "prompt_expander_adapter.json").read_text())["select_on_topic"] == 0.5
    bad = cli("train-lora", data_dir, "--base", base_model, "--out", tmp_path / "bad", "--select-on-topic", "1.5")
    assert bad.returncode == 2 and "must be a share in (0, 1]" in bad.stderr
