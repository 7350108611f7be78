"""The benchmark scripts still run (on a tiny model, a few repeats): they print figures, and assert none."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(script, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *map(str, args)], capture_output=True,
                       text=True, env=env, cwd=str(ROOT))
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_bench_load_and_decode_run(tiny_model_dir, tmp_path):
    out = run("bench_load.py", "--model", tiny_model_dir, "--runs", "1", "--json", tmp_path / "load.json")
    assert "cold load" in out and json.loads((tmp_path / "load.json").read_text())["warm_us"] > 0
    out = run("bench_decode.py", "--model", tiny_model_dir, "--repeats", "1", "--skip-small")
    assert "speed-up" in out


def test_bench_train_runs():
    out = run("bench_train.py", "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--seq", "32",
              "--batch", "2", "--steps", "6", "--warmup-steps", "1", "--precision", "fp32")
    assert "tokens/s" in out
