"""train-base and train-lora: loss goes down, kill -9 resumes exactly, adapters round-trip, --merge."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tiny

ROOT = Path(__file__).resolve().parent.parent
BASE_FLAGS = ["--vocab-size", "300", "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--n-positions", "64",
              "--batch-size", "8", "--lr", "3e-3", "--warmup", "2", "--precision", "fp32", "--max-val-batches", "4"]


def cli(*args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "prompt_expander", *map(str, args)], env=env, capture_output=True,
                          text=True, **kw)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    lines = tiny.corpus(1200)
    (d / "train.txt").write_text("\n".join(lines[:1100]) + "\n")
    (d / "val.txt").write_text("\n".join(lines[1100:]) + "\n")
    return d


@pytest.fixture(scope="module")
def base_model(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "model"
    r = cli("train-base", data_dir, "--out", out, "--steps", "60", "--save-every", "30", "--eval-every", "20",
            *BASE_FLAGS)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_train_base_lowers_loss_and_saves_a_loadable_model(base_model):
    state = json.loads((base_model / "training_summary.json").read_text())
    first, last = state["history"][0]["val_loss"], state["history"][-1]["val_loss"]
    assert last < first and last < math.log(300) - 1.5  # far below a uniform guess over the vocabulary
    assert (base_model / "model.safetensors").exists() and (base_model / "vocab.json").exists()
    assert "Prompt Expander default model" in (base_model / "README.md").read_text()
    umask = os.umask(0)
    os.umask(umask)
    for f in base_model.iterdir():  # saved files are readable like any other, not 0600 temp files
        if f.is_file():
            assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f.name
    from prompt_expander.loading import load_expander
    r = load_expander(str(base_model)).expand("portrait of a woman", seed=1)
    assert r.text.startswith("portrait of a woman, ")


def test_killed_run_resumes_from_checkpoint_to_the_same_weights(data_dir, tmp_path):
    from safetensors.torch import load_file
    flags = ["--steps", "40", "--save-every", "5", "--eval-every", "100", *BASE_FLAGS]
    full = tmp_path / "full"
    assert cli("train-base", data_dir, "--out", full, *flags).returncode == 0
    killed = tmp_path / "killed"
    negative = tmp_path / "negative.txt"
    negative.write_text("blurry\nlowres\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "prompt_expander", "train-base", str(data_dir), "--out",
                             str(killed), "--negative-vocab", str(negative), *flags], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = killed / "checkpoint" / "train_state.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if state_file.exists() and json.loads(state_file.read_text())["step"] >= 15:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step_at_kill = json.loads(state_file.read_text())["step"]
    assert 15 <= step_at_kill < 40 and not (killed / "model.safetensors").exists()
    r = cli("train-base", data_dir, "--out", killed, "--resume", *flags)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from" in r.stdout + r.stderr
    # The resume was not told --negative-vocab again; the terms shipped by the first invocation stay.
    assert json.loads((killed / "prompt_expander.json").read_text())["negative_vocabulary"] == "negative_vocab.txt"
    a, b = load_file(str(full / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_train_lora_lowers_loss_round_trips_and_merges(base_model, data_dir, tmp_path):
    out, merged = tmp_path / "castle", tmp_path / "merged"
    r = cli("train-lora", data_dir, "--base", base_model, "--out", out, "--select", "castle", "--r", "4",
            "--steps", "30", "--batch-size", "8", "--lr", "5e-3", "--eval-every", "10", "--save-every", "15",
            "--precision", "fp32", "--merge", merged)
    assert r.returncode == 0, r.stderr[-2000:]
    state = json.loads((out / "training_summary.json").read_text())
    assert state["val_metrics"]["cross_entropy"] < state["base_val_metrics"]["cross_entropy"]
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    assert "base + this adapter" in (out / "README.md").read_text()

    from prompt_expander.loading import load_expander
    exp = load_expander(str(base_model))
    one = exp.expand("a castle", seed=4, styles=[str(out)])
    exp.model_for_style(())
    assert exp.expand("a castle", seed=4, styles=[str(out)]).text == one.text  # round trip, same output

    ids = torch.tensor([exp.tokenizer.encode("a castle on a hill, highly detailed")])
    with torch.no_grad():
        ours = exp.model_for_style(((exp.load_adapter(str(out)), 1.0),))(input_ids=ids).logits
        merged_model = load_expander(str(merged)).model
        assert torch.allclose(ours, merged_model(input_ids=ids).logits, atol=1e-4)
    exp.model_for_style(())


def test_freeze_last_k_trains_only_the_last_block(base_model, data_dir, tmp_path):
    out = tmp_path / "lastk"
    r = cli("train-lora", data_dir, "--base", base_model, "--out", out, "--freeze-last-k", "1", "--steps", "5",
            "--batch-size", "4", "--eval-every", "5", "--save-every", "5", "--precision", "fp32")
    assert r.returncode == 0, r.stderr[-2000:]
    from safetensors.torch import load_file
    a, b = load_file(str(base_model / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert torch.equal(a["transformer.wte.weight"], b["transformer.wte.weight"])
    assert not torch.equal(a["transformer.h.0.mlp.c_fc.weight"], b["transformer.h.0.mlp.c_fc.weight"])
