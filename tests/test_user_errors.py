"""Every user mistake is one clear line (an ExpanderError), never a traceback; memory stays bounded."""
import json

import pytest

from prompt_expander.cli import main
from prompt_expander.errors import ExpanderError, InputError
from prompt_expander.limits import MAX_TEXT_CHARS, MAX_VARIATIONS


def fails_clearly(argv, capsys, *needles):
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture
def files(tmp_path):
    (tmp_path / "adir").mkdir()
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9, dragon\n")
    (tmp_path / "in.txt").write_text("a castle\n")
    return tmp_path


@pytest.mark.parametrize("arg,needle", [("@{d}/missing.txt", "no such file"), ("@{d}/adir", "is a directory"),
                                        ("@{d}/latin1.txt", "not UTF-8")])
def test_blocklist_file_mistakes(tiny_model_dir, files, capsys, arg, needle):
    fails_clearly(["expand", "a castle", "--model", str(tiny_model_dir), "--blocklist", arg.format(d=files)],
                  capsys, "--blocklist", needle)


def test_input_and_output_mistakes_are_found_before_any_work(files, capsys):
    missing_model = str(files / "no-such-model")  # never reached: the paths are checked first
    fails_clearly(["expand", "--input", str(files / "nope.txt"), "--model", missing_model], capsys, "no such file")
    fails_clearly(["expand", "--input", str(files / "adir"), "--model", missing_model], capsys, "is a directory")
    fails_clearly(["expand", "--input", str(files / "in.txt"), "--output", str(files / "adir"),
                   "--model", missing_model], capsys, "--output", "is a directory")


@pytest.mark.parametrize("device,needle", [("cuda", "no CUDA GPU"), ("bogus", "unknown device"),
                                           ("cuda:7", "CUDA")])
def test_devices_that_are_not_here(tiny_model_dir, capsys, device, needle):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    fails_clearly(["expand", "a castle", "--model", str(tiny_model_dir), "--device", device], capsys, needle)


def test_text_that_was_not_utf8_on_the_command_line(tiny_model_dir, capsys):
    # Python hands a non-UTF-8 argument over as a lone surrogate
    fails_clearly(["expand", "caf\udce9 au lait", "--model", str(tiny_model_dir)], capsys, "not valid UTF-8")


def test_variations_are_capped(tiny_model_dir, capsys):
    fails_clearly(["expand", "a cat", "--model", str(tiny_model_dir), "--variations", "100000000"], capsys,
                  f"from 1 to {MAX_VARIATIONS}")


def test_batch_input_is_streamed_long_lines_cut_and_bad_lines_reported(tiny_model_dir, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_bytes(b"a castle\n" + b"a cat " * (MAX_TEXT_CHARS // 3) + b"\n" + b"caf\xe9\n" + b"a red fox\n")
    out = tmp_path / "out.jsonl"
    assert main(["expand", "--input", str(src), "--output", str(out), "--model", str(tiny_model_dir)]) == 0
    err = capsys.readouterr().err
    assert f"line 2 is over {MAX_TEXT_CHARS:,} characters" in err and "line 3 is not UTF-8" in err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.get("original", "")[:8] for r in rows] == ["a castle", "a cat a ", "", "a red fo"]
    assert len(rows[1]["original"]) == MAX_TEXT_CHARS and rows[2] == {"line": 3, "error": rows[2]["error"]}


def test_a_huge_line_costs_bounded_memory(tmp_path):
    from prompt_expander.expansion.cli import iter_prompt_lines
    src = tmp_path / "sparse.txt"
    with open(src, "wb") as f:  # 200 MB of one line, most of it a hole in the file
        f.write(b"x" * 10)
        f.truncate(200 * 2**20)
    lines = list(iter_prompt_lines(src, max_chars=1000))
    assert len(lines) == 1 and len(lines[0][1]) == 1000 and "cut" in lines[0][2]


@pytest.mark.parametrize("kw,needle", [
    ({"seed": None}, "seed"),
    ({"top_k": True}, "top_k"),
    ({"temperature": float("inf")}, "temperature"),
    ({"styles": [("photo", "x")]}, "weight"),
    ({"styles": [("photo", float("nan"))]}, "weight"),
    ({"styles": [("photo", float("inf"))]}, "weight"),
    ({"styles": ["photo:1e8"]}, "weight"),
    ({"styles": [123]}, "style"),
    ({"blocklist": 123}, "blocklist"),
    ({"blocklist": ["ok", 5]}, "blocklist"),
    ({"count": lambda s: float("nan")}, "counter"),
    ({"count": "not a function"}, "count"),
])
def test_api_mistakes_are_input_errors(expander, kw, needle):
    with pytest.raises(InputError, match=needle):
        expander.expand("a castle", **kw)


def test_api_caps(expander):
    with pytest.raises(InputError, match="characters"):
        expander.expand("a" * (MAX_TEXT_CHARS + 1), seed=0)
    with pytest.raises(InputError, match="variations"):
        expander.expand_many("a castle", MAX_VARIATIONS + 1, seed=0)
    assert expander.expand("a castle " * 1000, seed=0).text.startswith("a castle")  # long but allowed


def test_numpy_seeds_are_whole_numbers(expander):
    import numpy as np
    assert expander.expand("a castle", seed=np.int64(5)).text == expander.expand("a castle", seed=5).text


def test_every_error_is_an_expander_error():
    assert issubclass(InputError, ExpanderError)
