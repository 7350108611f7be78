"""Re-record the README's example tables from the shipped default model and style adapters."""
from __future__ import annotations

import argparse
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prompt_expander.fileio import write_text_atomic  # noqa: E402

DEFAULT_HEADER = "| input | seed | added by the default model |"
STYLE_HEADER = "| input | seed | style | added |"
STYLES = ((), ("photo",), ("anime",), ("on-topic",))
HEADLINE = re.compile(r'^\$ prompt-expander expand "([^"]+)" --seed (\d+)$')
HEADLINE_WIDTH = 112


def headline_range(lines: list[str]) -> tuple[int, int, str, int]:
    """(first output line, end, text, seed) of the headline example: a command and its wrapped output."""
    for i, line in enumerate(lines):
        m = HEADLINE.match(line)
        if m:
            end = lines.index("```", i)
            return i + 1, end, m.group(1), int(m.group(2))
    raise SystemExit("README has no headline example ($ prompt-expander expand \"...\" --seed N)")


def table_rows(lines: list[str], header: str) -> tuple[int, int]:
    """The [start, end) line range of the rows under `header` (after its |---| line)."""
    start = lines.index(header) + 2
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return start, end


def parse_row(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split(" | ")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    ap.add_argument("--check", action="store_true", help="only say whether the tables are current")
    args = ap.parse_args(argv)
    from prompt_expander.expansion.resident import load_expander

    # Recorded in fp32, what `auto` loads the default in: its text is the same on every CPU tried.
    exp = load_expander(None, dtype="fp32")
    readme = Path(args.readme)
    lines = readme.read_text().split("\n")

    start, end, text, seed = headline_range(lines)
    lines[start:end] = textwrap.wrap(exp.expand(text, seed=seed).text, HEADLINE_WIDTH, break_long_words=False,
                                     break_on_hyphens=False)

    start, end = table_rows(lines, DEFAULT_HEADER)
    new_default = []
    for row in lines[start:end]:
        text, seed = parse_row(row)[:2]
        added = exp.expand(text.strip("`"), seed=int(seed)).added
        new_default.append(f"| {text} | {seed} | {added} |")
    lines[start:end] = new_default

    start, end = table_rows(lines, STYLE_HEADER)
    inputs = []
    for row in lines[start:end]:
        text, seed = parse_row(row)[:2]
        if (text, seed) not in inputs:
            inputs.append((text, seed))
    new_style = []
    for text, seed in inputs:
        for styles in STYLES:
            added = exp.expand(text.strip("`"), seed=int(seed), styles=list(styles)).added
            new_style.append(f"| {text} | {seed} | {styles[0] if styles else '—'} | {added} |")
    lines[start:end] = new_style

    updated = "\n".join(lines)
    if args.check:
        current = updated == readme.read_text()
        print("README examples are current" if current else "README examples differ from the shipped models")
        return 0 if current else 1
    write_text_atomic(readme, updated)
    print(f"rewrote the example tables in {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
