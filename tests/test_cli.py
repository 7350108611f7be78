"""The command line: every subcommand has --help; expand prints, variates, writes JSONL, and fails clearly."""
import json

import pytest

from prompt_expander.cli import COMMANDS, main
from test_training import cli


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out


def test_expand_text_variations_and_json(tiny_model_dir, capsys):
    assert main(["expand", "a castle", "--model", str(tiny_model_dir), "--seed", "7", "--variations", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(l.startswith("a castle, ") for l in lines)
    assert main(["expand", "a castle", "--model", str(tiny_model_dir), "--seed", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["seed"] == 8 and result["original"] == "a castle" and result["model"] == "tiny-gpt2"
    assert main(["expand", "a castle", "--model", str(tiny_model_dir), "--seed", "7"]) == 0
    assert capsys.readouterr().out.strip() == lines[0]


def test_batch_mode_writes_jsonl(tiny_model_dir, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("a castle\na red fox\n")
    r = cli("expand", "--model", tiny_model_dir, "--input", src, "--output", tmp_path / "out.jsonl", "--seed", "3")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(l) for l in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["original"] for r in rows] == ["a castle", "a red fox"]


def test_clear_errors(tiny_model_dir, capsys):
    assert main(["expand", "   ", "--model", str(tiny_model_dir)]) == 1
    assert "empty" in capsys.readouterr().err
    assert main(["expand", "a cat", "--model", str(tiny_model_dir), "--top-p", "2"]) == 1
    assert "top_p" in capsys.readouterr().err
    assert main(["expand", "a cat", "--model", "/no/such/folder"]) == 1
    assert "no model folder" in capsys.readouterr().err


def test_expand_candidates_keeps_the_cores_pick_and_records_it(tiny_model_dir, capsys):
    from prompt_expander.expansion.resident import load_expander
    assert main(["expand", "a castle", "--model", str(tiny_model_dir), "--seed", "7", "--candidates", "3",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["text"] == load_expander(str(tiny_model_dir)).expand("a castle", 7, candidates=3).text
    assert result["settings"]["candidates"] == 3
    assert main(["expand", "a castle", "--model", str(tiny_model_dir), "--candidates", "17"]) == 1
    assert "candidates" in capsys.readouterr().err
    assert main(["expand", "a castle", "--model", str(tiny_model_dir), "--seed", "7", "--candidates", "3",
                 "--pick-words", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["text"] == load_expander(str(tiny_model_dir)).expand("a castle", 7, candidates=3, pick_words=4).text
    assert result["settings"]["pick_words"] == 4


def test_expand_contrast_words_keeps_the_cores_text_and_records_it(tiny_model_dir, capsys):
    from prompt_expander.expansion.resident import load_expander
    assert main(["expand", "a castle", "--model", str(tiny_model_dir), "--seed", "7", "--contrast", "1",
                 "--contrast-words", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["text"] == load_expander(str(tiny_model_dir)).expand("a castle", 7, contrast=1.0,
                                                                       contrast_words=3).text
    assert result["settings"]["contrast_words"] == 3
    assert main(["expand", "a castle", "--model", str(tiny_model_dir), "--contrast-words", "-1"]) == 1
    assert "contrast_words" in capsys.readouterr().err


def test_expand_takes_the_models_own_pick_when_no_flag_names_one(tiny_model_dir, tmp_path, capsys):
    import shutil
    from prompt_expander.expansion.resident import load_expander
    folder = tmp_path / "own-pick"
    shutil.copytree(tiny_model_dir, folder)
    card = folder / "prompt_expander.json"
    card.write_text(json.dumps({**json.loads(card.read_text()), "candidates": 3, "pick_words": 4}))
    assert main(["expand", "a castle", "--model", str(folder), "--seed", "7", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["settings"]["candidates"], result["settings"]["pick_words"]) == (3, 4)
    assert result["text"] == load_expander(str(tiny_model_dir)).expand("a castle", 7, candidates=3, pick_words=4).text
    assert main(["expand", "a castle", "--model", str(folder), "--seed", "7", "--candidates", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["settings"]["candidates"] == 1
