"""Cold load time, warm (cached) call overhead and resident memory added by loading the default model
and by the decode loop's weight copies (made at the first expansion and the first batch of variations)."""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prompt_expander.fileio import write_json_atomic  # noqa: E402

CHILD = r"""
import os, sys, time, json
sys.path.insert(0, {root!r})
import torch, transformers, peft  # the host has these imported already
from prompt_expander.expansion import resident
import prompt_expander.expansion.expander, prompt_expander.model.adapters  # noqa: F401 (code, not the model)

def read_chars():
    # Bytes this process has read through read() and friends, files and /proc alike (Linux).
    with open("/proc/self/io") as f:
        return int(dict(line.split(": ") for line in f.read().splitlines())["rchar"])

def rss_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024

rss0 = rss_kb()
t0 = time.perf_counter()
exp = resident.load_expander({model!r})
cold = time.perf_counter() - t0
rss1 = rss_kb()
exp.expand("woman portrait", seed=0)
rss2 = rss_kb()
exp.expand_many("woman portrait", 8, seed=0)
rss3 = rss_kb()
warm = []
r0 = read_chars()
own = read_chars() - r0  # what reading /proc/self/io itself adds
r0 = read_chars()
for _ in range(200):
    t0 = time.perf_counter()
    resident.load_expander({model!r})
    warm.append(time.perf_counter() - t0)
warm_read = read_chars() - r0 - own
warm.sort()
print(json.dumps({{"cold_s": cold, "warm_us": 1e6 * warm[len(warm) // 2], "warm_bytes_read_200_calls": warm_read,
                  "rss_added_mb": (rss1 - rss0) / 1024,
                  "rss_after_expand_mb": (rss2 - rss0) / 1024, "rss_after_variations_mb": (rss3 - rss0) / 1024}}))
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None)
    ap.add_argument("--runs", type=int, default=5, help="fresh processes (cold loads) to take the median of")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    code = CHILD.format(root=str(ROOT), model=args.model)
    runs = []
    for _ in range(args.runs):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    res = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"cold load (imports excluded): {res['cold_s'] * 1000:.0f} ms (median of {args.runs} fresh processes)")
    print(f"warm load_expander() call: {res['warm_us']:.1f} us (a dict lookup plus a stat of the folder); bytes "
          f"read by 200 warm calls: {res['warm_bytes_read_200_calls']:.0f}")
    print(f"RSS added by loading: {res['rss_added_mb']:.0f} MB; after the first expansion: "
          f"{res['rss_after_expand_mb']:.0f} MB; after the first 8 variations: {res['rss_after_variations_mb']:.0f} MB")
    if args.json:
        write_json_atomic(args.json, res)
    return res


if __name__ == "__main__":
    main()
