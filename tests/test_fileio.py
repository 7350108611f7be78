"""fileio: files appear whole or not at all."""
import pytest

from prompt_expander.fileio import write_lines_atomic


def test_lines_are_written_one_per_line(tmp_path):
    write_lines_atomic(tmp_path / "out.txt", (w for w in ["a lemon", "a castle, art"]))
    assert (tmp_path / "out.txt").read_text(encoding="utf-8") == "a lemon\na castle, art\n"


def test_a_failure_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    (tmp_path / "out.txt").write_text("old\n")

    def lines():
        yield "new"
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        write_lines_atomic(tmp_path / "out.txt", lines())
    assert (tmp_path / "out.txt").read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
