"""Atomic file writes and streaming readers for text that may be badly encoded."""
from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def plain_file_mode(path: str | os.PathLike) -> None:
    """Give a file the mode a plain open() would: others can read a saved model as they can any file."""
    os.chmod(path, 0o666 & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    plain_file_mode(tmp)  # mkstemp makes 0600; a written file should look like any other
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_lines_atomic(path: str | os.PathLike, lines: Iterable[str]) -> None:
    """Stream lines (without their newline) into a file that appears whole or not at all."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")


def read_json(path: str | os.PathLike):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_report(result, table: str, json_path=None, markdown_path=None) -> None:
    """Print a command's Markdown table, and write it and the full result where the user asked."""
    print(table)
    if json_path:
        write_json_atomic(json_path, result)
    if markdown_path:
        write_text_atomic(markdown_path, table)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary directory beside `path` that replaces `path` whole when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old.{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def open_text(path: str | os.PathLike) -> io.TextIOBase:
    """Open a .txt or .gz file for streaming; undecodable bytes become U+FFFD instead of crashing."""
    path = Path(path)
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline=None)


def iter_lines(path: str | os.PathLike, strict: bool = False) -> Iterator[str]:
    """Non-blank lines of a text file, streamed; strict=True names the first line that is not UTF-8."""
    if not strict:
        with open_text(path) as f:
            for line in f:
                line = line.rstrip("\r\n")
                if line.strip():
                    yield line
        return
    from .errors import DataError

    path = Path(path)
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{n}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            if line.strip():
                yield line
