"""self-distill: which first phrases become subjects, and the training files written from their expansions."""
import json

import pytest

from prompt_expander.cli import main
from prompt_expander.train import self_distill
from prompt_expander.train.self_distill import choose_subjects, subject_of

SHORT = ["lemon", "a red fox", "old castle", "moon", "harbour", "tea cup"]
SENTENCES = ["a dog chasing a ball in the park", "two owls reading a map at night"]
STYLE = "concept art"  # opens 1 prompt here and follows a first phrase in all the others


def corpus(path):
    lines = [f"{s}, {STYLE}, highly detailed" for s in SHORT + SENTENCES]
    lines += [f"{STYLE}, a lighthouse", "no comma here", "(weighted:1.2), sharp", "lemon, again"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_subject_is_the_first_phrase_of_a_prompt_that_goes_on():
    assert subject_of("A  Red Fox , in snow") == "A Red Fox"
    assert subject_of("a dog chasing a ball in the park, photo") == "a dog chasing a ball in the park"
    assert subject_of("no comma here") is None
    assert subject_of("lemon,  ") is None
    assert subject_of("(weighted:1.2), sharp") is None
    assert subject_of(" ".join(["word"] * 15) + ", photo") is None


def test_subjects_are_distinct_seeded_without_styles_or_excluded_inputs_and_every_third_a_sentence(tmp_path):
    data = corpus(tmp_path / "train.txt")
    chosen = choose_subjects(data, 6, seed=3, exclude={"moon"})
    assert chosen == choose_subjects(data, 6, seed=3, exclude={"moon"})
    assert len(set(chosen)) == 6 and "moon" not in chosen and STYLE not in chosen
    assert [s in SENTENCES for s in chosen] == [False, False, True, False, False, True]
    everything = choose_subjects(data, 100, seed=3, exclude=set())
    assert sorted(everything) == sorted(SHORT + SENTENCES)  # short ones fill in once sentences run out


def test_the_files_hold_each_subjects_on_topic_pick_and_a_rerun_continues(tiny_model_dir, tmp_path, monkeypatch,
                                                                          capsys):
    from prompt_expander.expansion.resident import load_expander
    monkeypatch.setattr(self_distill, "PART_SIZE", 3)
    data, out = corpus(tmp_path / "train.txt"), tmp_path / "distill"
    args = ["self-distill", str(data), "--out", str(out), "--model", str(tiny_model_dir), "--subjects", "7",
            "--candidates", "3", "--seed", "5"]
    assert main(args) == 0
    subjects = (out / "subjects.txt").read_text().splitlines()
    written = (out / "train.txt").read_text().splitlines() + (out / "val.txt").read_text().splitlines()
    exp = load_expander(str(tiny_model_dir))
    expected = [exp.expand(s, seed=5 + i, candidates=3).text for i, s in enumerate(subjects)]
    assert written == [e for e in expected if e not in subjects]  # an empty addition teaches nothing
    assert all(line.startswith(s) for line, s in zip(written, subjects))  # the subject survives verbatim
    assert len((out / "val.txt").read_text().splitlines()) == 1
    assert sorted(p.name for p in (out / "parts").iterdir()) == ["0000000.txt", "0000003.txt", "0000006.txt"]

    (out / "parts" / "0000003.txt").unlink()  # as if killed while the second part was being written
    (out / "train.txt").unlink()
    assert main(args) == 0
    assert (out / "train.txt").read_text().splitlines() + (out / "val.txt").read_text().splitlines() == written

    capsys.readouterr()
    assert main([*args[:-1], "6"]) == 1
    assert "other settings" in capsys.readouterr().err
    assert json.loads((out / "self_distill.json").read_text())["seed"] == 5


def test_a_run_given_minutes_stops_before_a_part_that_would_not_fit_and_the_same_command_goes_on(
        tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(self_distill, "PART_SIZE", 3)
    clock = iter(range(0, 10_000, 10))  # every look at the clock is 10 s later: a part takes 10 s
    monkeypatch.setattr(self_distill.time, "monotonic", lambda: next(clock))
    data, out = corpus(tmp_path / "train.txt"), tmp_path / "distill"
    args = ["self-distill", str(data), "--out", str(out), "--model", str(tiny_model_dir), "--subjects", "7",
            "--candidates", "2", "--seed", "5", "--minutes", "1"]
    assert main(args) == 0
    assert sorted(p.name for p in (out / "parts").iterdir()) == ["0000000.txt", "0000003.txt"]  # a 3rd: past 60 s
    early = (out / "train.txt").read_text().splitlines() + (out / "val.txt").read_text().splitlines()
    assert main(args[:-2]) == 0  # without --minutes: the rest, and the files from every part
    done = (out / "train.txt").read_text().splitlines() + (out / "val.txt").read_text().splitlines()
    assert done[:len(early)] == early and len(done) > len(early)
    with pytest.raises(SystemExit):
        main([*args[:-1], "0"])


def test_a_batched_run_decodes_groups_of_subjects_within_each_part(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from prompt_expander.expansion.resident import load_expander
    monkeypatch.setattr(self_distill, "PART_SIZE", 3)
    data, out = corpus(tmp_path / "train.txt"), tmp_path / "distill"
    args = ["self-distill", str(data), "--out", str(out), "--model", str(tiny_model_dir), "--subjects", "7",
            "--candidates", "2", "--seed", "5", "--batch", "2"]
    assert main(args) == 0
    subjects = (out / "subjects.txt").read_text().splitlines()
    written = (out / "train.txt").read_text().splitlines() + (out / "val.txt").read_text().splitlines()
    exp = load_expander(str(tiny_model_dir))
    groups = [(0, 2), (2, 3), (3, 5), (5, 6), (6, 7)]  # groups of 2, never across a part of 3
    expected = [r.text for a, b in groups for r in exp.expand_subjects(subjects[a:b], seed=5 + a, candidates=2)]
    assert written == [e for e in expected if e not in subjects]
    assert json.loads((out / "self_distill.json").read_text())["batch"] == 2
    capsys.readouterr()
    assert main([*args[:-1], "3"]) == 1  # another batch can give other lines: not mixed into this run
    assert "other settings" in capsys.readouterr().err
    assert main(["self-distill", str(data), "--out", str(tmp_path / "o"), "--model", str(tiny_model_dir),
                 "--candidates", "8", "--batch", "200"]) == 1
    assert "rows a decode" in capsys.readouterr().err


def test_a_missing_file_no_subjects_or_refused_settings_are_clear_errors(tiny_model_dir, tmp_path, capsys):
    assert main(["self-distill", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 1
    assert "no such prompts file" in capsys.readouterr().err
    (tmp_path / "flat.txt").write_text("no comma here\nnor here\n")
    assert main(["self-distill", str(tmp_path / "flat.txt"), "--out", str(tmp_path / "o"),
                 "--model", str(tiny_model_dir)]) == 1
    assert "opens with a subject" in capsys.readouterr().err
    assert main(["self-distill", str(tmp_path / "flat.txt"), "--out", str(tmp_path / "o"), "--model",
                 str(tiny_model_dir), "--candidates", "999"]) == 1
    assert "candidates must be" in capsys.readouterr().err
    assert main(["self-distill", str(tmp_path / "flat.txt"), "--out", str(tmp_path / "o"), "--model",
                 str(tiny_model_dir), "--lora", "photo:lots"]) == 1
    assert "no adapter" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["self-distill", str(tmp_path / "flat.txt"), "--out", str(tmp_path / "o"), "--subjects", "0"])
