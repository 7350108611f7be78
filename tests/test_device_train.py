"""tools/device_train.sh: a model trained from an xz corpus comes back as fp16 tar parts that unpack and load."""
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from tests.tiny import corpus

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--vocab-size", "400", "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--n-positions", "64",
        "--batch-size", "8", "--eval-every", "4", "--save-every", "4", "--precision", "fp32"]


def _run(tmp_path, *options):
    data, out = tmp_path / "gpu", tmp_path / "out"
    data.mkdir(exist_ok=True)
    out.mkdir(exist_ok=True)
    lines = corpus(600)
    if not (data / "train.txt").exists():
        with lzma.open(data / "train.txt.xz", "wt", encoding="utf-8") as f:
            f.write("\n".join(lines[:500]) + "\n")
    (data / "val.txt").write_text("\n".join(lines[500:]) + "\n", encoding="utf-8")
    env = {**os.environ, "OUT": str(out), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT)}
    return subprocess.run(["bash", str(ROOT / "tools" / "device_train.sh"), "tiny", *TINY, *options], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300), out


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("split") is None, reason="needs bash and split")
def test_a_device_run_comes_back_as_fp16_parts_that_load(tmp_path):
    from safetensors.torch import load_file

    from prompt_expander.expansion.resident import load_expander
    done, out = _run(tmp_path, "--steps", "8")
    assert done.returncode == 0, done.stderr[-2000:]
    parts = sorted(out.glob("tiny.tar.part-*"))
    assert parts and (out / "tiny.log").is_file()
    whole = tmp_path / "tiny.tar"
    whole.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(whole) as tar:
        tar.extractall(tmp_path / "back")
    model = tmp_path / "back" / "tiny"
    assert not (model / "checkpoint").exists() and not (model / "cache").exists()
    assert {v.dtype for v in load_file(model / "model.safetensors").values()} == {torch.float16}
    assert (tmp_path / "gpu" / "train.txt").is_file()  # unpacked once, for the next run on the machine
    load_expander(str(model)).expand("a castle", seed=1)


def test_a_run_stopped_before_its_last_step_keeps_its_checkpoint_and_fails(tmp_path):
    done, out = _run(tmp_path, "--steps", "100000", "--max-minutes", "0.0001")
    assert done.returncode == 1 and "no model.safetensors" in done.stderr
    assert (tmp_path / "runs" / "device" / "tiny" / "checkpoint").is_dir()
    assert not list(out.glob("tiny.tar.part-*"))
