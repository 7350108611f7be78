"""prepare: every reader, every filter rule, dedup, the stable split and the stats."""
import gzip
import json

import pytest

from prompt_expander.errors import DataError
from prompt_expander.data.prepare import PromptFilter, addition_key, dedup_key, prepare, split_of
from prompt_expander.data.sources import iter_prompts


@pytest.mark.parametrize("raw,rule", [
    ("!dream a cat on a mat", "bot_command"),
    ("1234 5678 !!!", "no_letters"),
    ("see https://example.org a cat", "url"),
    ("a cat", "too_short"),
    ("x " * 600, "too_long"),
    ("is it really working?", "chatter"),
    ("thanks everyone lol", "chatter"),
    ("nude woman on a beach", "nsfw"),
    ("a red fox in the snow", "kept"),
])
def test_filter_rules(raw, rule):
    assert PromptFilter().clean(raw)[1] == rule


def test_whitespace_and_trailing_flags_are_normalised():
    assert PromptFilter().clean("  a   red\tfox  in snow -n 4 --seed 5 ") == ("a red fox in snow", "kept")


def test_dedup_key_ignores_case_and_punctuation():
    assert dedup_key("A Red-Fox, in SNOW!") == dedup_key("a red fox in snow")


def test_split_is_stable():
    assert split_of("a red fox in snow", 5) == split_of("a red fox in snow", 5)
    assert {split_of(f"prompt number {i}", 500) for i in range(50)} == {"train", "val"}


def test_readers(tmp_path):
    (tmp_path / "a.txt").write_text("one prompt here\n\ntwo prompt here\n")
    with gzip.open(tmp_path / "b.txt.gz", "wt") as f:
        f.write("gz prompt here\n")
    (tmp_path / "c.csv").write_text('id,prompt\n1,"csv prompt, with comma"\n2,\n')
    (tmp_path / "d.tsv").write_text("text\tx\ntsv prompt here\t1\n")
    (tmp_path / "e.jsonl").write_text('{"prompt": "jsonl prompt here"}\n"bare string prompt"\n')
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"prompt": ["parquet prompt here", None], "seed": [1, 2]}), tmp_path / "metadata.parquet")
    assert list(iter_prompts(tmp_path / "a.txt")) == ["one prompt here", "two prompt here"]
    assert list(iter_prompts(tmp_path / "b.txt.gz")) == ["gz prompt here"]
    assert list(iter_prompts(tmp_path / "c.csv")) == ["csv prompt, with comma"]
    assert list(iter_prompts(tmp_path / "d.tsv")) == ["tsv prompt here"]
    assert list(iter_prompts(tmp_path / "e.jsonl")) == ["jsonl prompt here", "bare string prompt"]
    assert list(iter_prompts(tmp_path / "metadata.parquet")) == ["parquet prompt here"]
    with pytest.raises(DataError, match="no column"):
        list(iter_prompts(tmp_path / "c.csv", column="caption"))


def test_non_utf8_bytes_do_not_crash(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 au lait on a table\n")
    assert list(iter_prompts(tmp_path / "bad.txt")) == ["caf\ufffd au lait on a table"]


def test_prepare_end_to_end(tmp_path):
    src = tmp_path / "src.txt"
    lines = [f"a painting of castle number {i}, highly detailed" for i in range(300)]
    lines += ["A PAINTING of castle number 1 highly detailed!!", "hi", "nude figure drawing study", "!dream x y z"]
    src.write_text("\n".join(lines) + "\n")
    stats = prepare([src], tmp_path / "out", val_permille=100, progress=False)
    assert stats["read"] == 304 and stats["kept"] == 300
    assert stats["dropped"]["duplicate"] == 1 and stats["dropped"]["nsfw"] == 1
    assert stats["dropped"]["too_short"] == 1 and stats["dropped"]["bot_command"] == 1
    train = (tmp_path / "out" / "train.txt").read_text().splitlines()
    val = (tmp_path / "out" / "val.txt").read_text().splitlines()
    assert len(train) + len(val) == 300 and 0 < len(val) < 100 and not set(train) & set(val)
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["train"] == len(train)


def test_a_template_run_over_many_subjects_keeps_only_its_first_copies(tmp_path):
    template = ", d & d, fantasy, Portrait, highly detailed, digital painting"
    lines = [f"{animal}{template}" for animal in ("a fox", "a cat", "an owl", "a bear")]
    lines += ["a fox, d&d fantasy portrait highly detailed digital painting!"]  # the same addition, punctuated
    lines += [f"{animal}, digital art" for animal in ("a fox", "a cat", "an owl")]  # too short to be a template
    lines += ["a lone tree, in the fog"]
    (tmp_path / "src.txt").write_text("\n".join(lines) + "\n")
    stats = prepare([tmp_path / "src.txt"], tmp_path / "o", val_permille=0, progress=False, max_same_addition=2)
    assert (tmp_path / "o" / "train.txt").read_text().splitlines() == lines[:2] + lines[5:]
    assert stats["dropped"]["template"] == 2 and stats["dropped"]["duplicate"] == 1
    assert stats["max_same_addition"] == 2
    off = prepare([tmp_path / "src.txt"], tmp_path / "off", val_permille=0, progress=False)
    assert off["dropped"]["template"] == 0 and off["kept"] == len(lines) - 1  # only the duplicate goes
    assert addition_key("a fox, in the fog") is None and addition_key("no comma at all here") is None


def test_custom_nsfw_list(tmp_path):
    (tmp_path / "src.txt").write_text("a castle made of cheese\na castle made of stone\n")
    (tmp_path / "words.txt").write_text("# my list\ncheese\n")
    stats = prepare([tmp_path / "src.txt"], tmp_path / "o", nsfw_list=tmp_path / "words.txt", progress=False)
    assert stats["dropped"]["nsfw"] == 1 and stats["kept"] == 1


def test_a_split_source_is_mended_with_compounds_from_the_ordinary_one(tmp_path):
    ordinary = tmp_path / "cased.txt"
    ordinary.write_text("".join(f"Portrait {i} of a knight, close-up, award-winning, kim jong-un\n" for i in range(30)))
    split = tmp_path / "lower.txt"
    split.write_text("".join(f"a castle number {i} at night, close - up, award - winning, 8 k - n 4\n"
                             for i in range(30)) + "an eel - part of a series, 1 9 7 8\n")
    stats = prepare([ordinary, split], tmp_path / "out", val_permille=0, progress=False)
    lines = (tmp_path / "out" / "train.txt").read_text().splitlines()
    assert "a castle number 3 at night, close-up, award-winning, 8k" in lines
    assert "an eel - part of a series, 1978" in lines
    assert "Portrait 3 of a knight, close-up, award-winning, kim jong-un" in lines  # untouched
    assert stats["mended"] == 31 and stats["hyphen_compounds_known"] == 3


def test_mending_does_not_move_a_prompt_between_splits(tmp_path):
    ordinary = tmp_path / "cased.txt"
    ordinary.write_text("".join(f"a knight {i}, close-up, award-winning\n" for i in range(30)))
    split = tmp_path / "lower.txt"
    raw = [f"a castle {i} at night, close - up, award - winning, 8 k" for i in range(200)]
    split.write_text("\n".join(raw) + "\n")
    prepare([ordinary, split], tmp_path / "out", val_permille=300, progress=False)
    val = (tmp_path / "out" / "val.txt").read_text().splitlines()
    expected = [r.replace("close - up", "close-up").replace("award - winning", "award-winning").replace("8 k", "8k")
                for r in raw if split_of(dedup_key(r), 300) == "val"]
    assert [v for v in val if v.startswith("a castle")] == expected and expected


@pytest.mark.parametrize("value", ["-1", "x", "2.5"])
def test_a_bad_template_cap_is_refused_by_name(value, capsys):
    from prompt_expander.cli import main
    with pytest.raises(SystemExit) as exit_:
        main(["prepare", "in.txt", "--out", "o", "--max-same-addition", value])
    assert exit_.value.code == 2
    assert "--max-same-addition: must be a whole number, 0 (off) or more" in capsys.readouterr().err
