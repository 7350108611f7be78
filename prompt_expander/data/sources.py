"""Readers that stream prompts out of text, CSV/TSV, JSONL and Parquet files."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Iterator

from ..errors import DataError
from ..fileio import iter_lines, open_text

DEFAULT_COLUMNS = ("prompt", "Prompt", "text", "caption", "positive_prompt")


def _suffixes(path: Path) -> list[str]:
    s = [x.lower() for x in path.suffixes]
    return s[:-1] if s and s[-1] == ".gz" else s


def _pick_column(fields, column: str | None, path: Path) -> str:
    if column:
        if column not in fields:
            raise DataError(f"{path}: no column {column!r}; columns are {list(fields)}")
        return column
    for name in DEFAULT_COLUMNS:
        if name in fields:
            return name
    raise DataError(f"{path}: no prompt column found among {list(fields)}; pass --column")


def _iter_csv(path: Path, column: str | None, delimiter: str) -> Iterator[str]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open_text(path) as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        if not reader.fieldnames:
            return
        col = _pick_column(reader.fieldnames, column, path)
        for row in reader:
            value = row.get(col)
            if value and value.strip():
                yield value


def _iter_jsonl(path: Path, column: str | None) -> Iterator[str]:
    for n, line in enumerate(iter_lines(path), 1):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if isinstance(obj, str):
            value = obj
        elif isinstance(obj, dict):
            value = obj.get(_pick_column(obj.keys(), column, path))
        else:
            continue
        if isinstance(value, str) and value.strip():
            yield value


def _iter_parquet(path: Path, column: str | None) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - depends on the environment
        raise DataError("reading Parquet needs pyarrow: pip install pyarrow") from None
    pf = pq.ParquetFile(path)
    col = _pick_column(pf.schema_arrow.names, column, path)
    for batch in pf.iter_batches(columns=[col], batch_size=65536):
        for value in batch.column(0).to_pylist():
            if isinstance(value, str) and value.strip():
                yield value


def iter_prompts(path: str | Path, column: str | None = None) -> Iterator[str]:
    """Yield raw prompt strings from one file, choosing the reader by its extension."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    kinds = _suffixes(path)
    kind = kinds[-1] if kinds else ".txt"
    if kind in (".csv",):
        yield from _iter_csv(path, column, ",")
    elif kind in (".tsv", ".tab"):
        yield from _iter_csv(path, column, "\t")
    elif kind in (".jsonl", ".ndjson"):
        yield from _iter_jsonl(path, column)
    elif kind == ".parquet":
        yield from _iter_parquet(path, column)
    else:
        yield from iter_lines(path)


def expand_inputs(inputs) -> list[Path]:
    """Turn files and folders into a sorted file list (folders contribute their prompt files)."""
    out: list[Path] = []
    exts = {".txt", ".gz", ".csv", ".tsv", ".jsonl", ".ndjson", ".parquet"}
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in exts))
        else:
            out.append(p)
    return out
