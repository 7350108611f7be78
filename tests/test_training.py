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
    from prompt_expander.expansion.resident import load_expander
    from prompt_expander.fragments import fragments, read_known_words
    r = load_expander(str(base_model)).expand("portrait of a woman", seed=1)
    assert r.text.startswith("portrait of a woman")  # 60 steps make mostly broken words, which are dropped
    # The corpus's words ship with the model, and the tidy-up keeps no modifier with a word outside them.
    assert json.loads((base_model / "prompt_expander.json").read_text())["known_words"] == "known_words.txt.gz"
    known = read_known_words(base_model / "known_words.txt.gz")
    assert "castle" in known and "zorblax" not in known
    for seed in range(5):
        added = load_expander(str(base_model)).expand("portrait of a zorblax", seed=seed).added
        assert fragments(added, known, allowed=["zorblax"]) == []


def test_killed_run_resumes_from_checkpoint_to_the_same_weights(data_dir, tmp_path):
    from safetensors.torch import load_file
    from prompt_expander.train.loop import recover_checkpoint
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
        try:  # the checkpoint is swapped in by renames, so it can vanish between two looks
            if json.loads(state_file.read_text())["step"] >= 15:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The kill can land between atomic_dir's two renames, which leaves no OUT/checkpoint for a moment; --resume
    # recovers the newest complete one first, and so does this check.
    recover_checkpoint(killed / "checkpoint")
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


def _checkpoint(folder, step):
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    if step is not None:  # train_state.json is written last, so a folder without it was cut short
        (folder / "train_state.json").write_text(json.dumps({"step": step}))


@pytest.mark.parametrize("old_step, new_step, kept", [(10, 15, 15), (10, None, 10), (None, 15, 15)])
def test_a_kill_between_the_two_renames_keeps_the_newest_complete_checkpoint(tmp_path, old_step, new_step, kept):
    from prompt_expander.train.loop import recover_checkpoint
    ckpt = tmp_path / "checkpoint"
    _checkpoint(tmp_path / ".checkpoint.old.4242", old_step)
    _checkpoint(tmp_path / ".checkpoint.x7yq", new_step)
    recover_checkpoint(ckpt)
    assert json.loads((ckpt / "train_state.json").read_text())["step"] == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_recovery_leaves_a_complete_checkpoint_alone_and_drops_strays(tmp_path):
    from prompt_expander.train.loop import recover_checkpoint
    ckpt = tmp_path / "checkpoint"
    _checkpoint(ckpt, 20)
    _checkpoint(tmp_path / ".checkpoint.x7yq", None)
    recover_checkpoint(ckpt)
    assert json.loads((ckpt / "train_state.json").read_text())["step"] == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_train_lora_lowers_loss_round_trips_and_merges(base_model, data_dir, tmp_path):
    out, merged = tmp_path / "castle", tmp_path / "merged"
    r = cli("train-lora", data_dir, "--base", base_model, "--out", out, "--select", "castle", "--r", "4",
            "--steps", "30", "--batch-size", "8", "--lr", "5e-3", "--eval-every", "10", "--save-every", "15",
            "--precision", "fp32", "--merge", merged)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Could not find a config file" not in r.stderr  # peft asked the Hub about a base named "model"
    state = json.loads((out / "training_summary.json").read_text())
    assert state["val_metrics"]["cross_entropy"] < state["base_val_metrics"]["cross_entropy"]
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    assert "base + this adapter" in (out / "README.md").read_text()

    from prompt_expander.expansion.resident import load_expander
    exp = load_expander(str(base_model))
    one = exp.expand("a castle", seed=4, styles=[str(out)])
    exp.model_for_style(())
    assert exp.expand("a castle", seed=4, styles=[str(out)]).text == one.text  # round trip, same output

    ids = torch.tensor([exp.tokenizer.encode("a castle on a hill, highly detailed")])
    with torch.no_grad():
        ours = exp.model_for_style(((exp.load_adapter(str(out)), 1.0),))(input_ids=ids).logits
        merged_model = load_expander(str(merged)).model
        assert (merged / "known_words.txt.gz").read_bytes() == (base_model / "known_words.txt.gz").read_bytes()
        assert torch.allclose(ours, merged_model(input_ids=ids).logits, atol=1e-4)
    exp.model_for_style(())


def test_train_lora_card_reproduces_a_full_fine_tune_fitted_to_minutes():
    """The card's command repeats the run: --freeze-last-k kept, --minutes replaced by the steps it fitted, and no
    empty --select."""
    import argparse
    import shlex

    from prompt_expander.train import lora

    def parse(argv):
        p = argparse.ArgumentParser()
        lora.add_arguments(p)
        return p.parse_args(argv)

    run = parse(["runs/data", "--base", "runs/base", "--out", "runs/ft", "--freeze-last-k", "8", "--minutes", "28",
                 "--lr", "1e-4", "--warmup", "50", "--seed", "1"])
    command = lora.reproduce_command(run, 1362)
    assert command == ("python -m prompt_expander train-lora runs/data --base runs/base --out runs/ft "
                       "--freeze-last-k 8 --steps 1362 --batch-size 32 --lr 0.0001 --warmup 50 --weight-decay 0.1 "
                       "--seed 1 --resume")
    again = parse(shlex.split(command)[4:])
    for name in ("data", "base", "out", "select", "freeze_last_k", "batch_size", "lr", "warmup", "seed"):
        assert getattr(again, name) == getattr(run, name), name
    assert again.steps == 1362 and again.minutes == 0

    style = parse(["runs/data", "--out", "runs/my photo", "--select", "photo, dslr", "--r", "8", "--steps", "300"])
    assert lora.reproduce_command(style, 300) == (
        "python -m prompt_expander train-lora runs/data --base models/default --out 'runs/my photo' "
        "--select 'photo, dslr' --r 8 --alpha 32 --steps 300 --batch-size 32 --lr 0.0005 --warmup 50 "
        "--weight-decay 0.1 --seed 1234 --resume")


def test_train_lora_resumes_only_on_the_data_and_base_it_was_trained_on(base_model, data_dir, tmp_path):
    out = tmp_path / "style"
    flags = ["--base", base_model, "--out", out, "--r", "4", "--batch-size", "8", "--eval-every", "100",
             "--save-every", "5", "--precision", "fp32"]
    assert cli("train-lora", data_dir, "--select", "castle", "--steps", "5", *flags).returncode == 0
    # Other keywords make another subset: the checkpoint must not carry on over it as if nothing changed.
    r = cli("train-lora", data_dir, "--select", "woman", "--steps", "10", "--resume", *flags)
    assert r.returncode != 0 and "was trained on other data" in r.stderr and "Traceback" not in r.stderr
    other_base = tmp_path / "other_base"
    r = cli("train-base", data_dir, "--out", other_base, "--steps", "2", *BASE_FLAGS)
    assert r.returncode == 0, r.stderr[-2000:]
    r = cli("train-lora", data_dir, "--select", "castle", "--steps", "10", "--resume",
            *[other_base if f == base_model else f for f in flags])
    assert r.returncode != 0 and "another base model" in r.stderr and "Traceback" not in r.stderr
    r = cli("train-lora", data_dir, "--select", "castle", "--steps", "10", "--resume", *flags)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from" in r.stdout + r.stderr
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["step"] == 10 and summary["config"]["steps"] == 10  # the resumed invocation's settings


def test_freeze_last_k_trains_only_the_last_block(base_model, data_dir, tmp_path):
    out = tmp_path / "lastk"
    r = cli("train-lora", data_dir, "--base", base_model, "--out", out, "--freeze-last-k", "1", "--steps", "5",
            "--batch-size", "4", "--eval-every", "5", "--save-every", "5", "--precision", "fp32")
    assert r.returncode == 0, r.stderr[-2000:]
    from safetensors.torch import load_file
    a, b = load_file(str(base_model / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert torch.equal(a["transformer.wte.weight"], b["transformer.wte.weight"])
    assert not torch.equal(a["transformer.h.0.mlp.c_fc.weight"], b["transformer.h.0.mlp.c_fc.weight"])


DIE_AT_STEP = """
import os, sys
from prompt_expander.train import dataset
die_at = int(os.environ["DIE_AT_STEP"])
real = dataset.PackedBatches.batch
def batch(self, step, *a, **kw):
    if step == die_at:
        os._exit(9)  # as abrupt as a kill: no cleanup, no final save
    return real(self, step, *a, **kw)
dataset.PackedBatches.batch = batch
from prompt_expander.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_many_epochs_and_a_kill_across_an_epoch_boundary_resume_bit_identically(data_dir, tmp_path):
    from safetensors.torch import load_file

    from prompt_expander.train.dataset import PackedBatches, TokenizedPrompts
    small = tmp_path / "data"
    small.mkdir()
    (small / "train.txt").write_text("\n".join((data_dir / "train.txt").read_text().splitlines()[:150]) + "\n")
    (small / "val.txt").write_text((data_dir / "val.txt").read_text())
    flags = [*BASE_FLAGS, "--eval-every", "1000"]
    full = tmp_path / "full"
    # the first run tells how the corpus packs; the test then picks a checkpoint just before a boundary
    r = cli("train-base", small, "--out", full, "--steps", "1", "--save-every", "1", *flags)
    assert r.returncode == 0, r.stderr[-2000:]
    packed = PackedBatches(TokenizedPrompts.load(full / "cache" / "train.npz"), 64, 8, 1234, 0, 1)
    boundary = int(packed.epoch_start(1) // 8)  # the step whose batch reaches into epoch 1
    steps = int(packed.epoch_start(3) // 8) + 2
    assert 3 <= boundary < steps

    common = ["--steps", steps, "--save-every", boundary, *flags]
    r = cli("train-base", small, "--out", full, *common)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((full / "training_summary.json").read_text())
    assert summary["step"] == steps and summary["epochs"] >= 3
    card = (full / "README.md").read_text()
    assert "epochs)" in card and "device: cpu" in card and "tokens/s" in card

    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "DIE_AT_STEP": str(boundary + 2)}
    r = subprocess.run([sys.executable, "-c", DIE_AT_STEP, "train-base", str(small), "--out", str(killed),
                        *map(str, common)], env=env, capture_output=True, text=True)
    assert r.returncode == 9
    assert json.loads((killed / "checkpoint" / "train_state.json").read_text())["step"] == boundary
    r = cli("train-base", small, "--out", killed, "--resume", *common)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = load_file(str(full / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_folder_reused_for_other_data_gets_a_new_tokenizer_or_a_clear_error(data_dir, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "train.txt").write_text("\n".join(f"a {w} house, watercolor, {w} light" for w in
                                               ["red", "blue", "green", "tall", "small", "old"] * 40) + "\n")
    out = tmp_path / "run"
    flags = ["--steps", "2", "--save-every", "1", "--eval-every", "100", *BASE_FLAGS]
    assert cli("train-base", data_dir, "--out", out, *flags).returncode == 0
    vocab = (out / "vocab.json").read_text()
    r = cli("train-base", other, "--out", out, "--resume", *flags)
    assert r.returncode == 1 and "tokenizer was trained from other data" in r.stderr and "Traceback" not in r.stderr
    assert (out / "vocab.json").read_text() == vocab  # nothing was touched
    r = cli("train-base", other, "--out", out, *flags)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "training a new one" in r.stdout and (out / "vocab.json").read_text() != vocab
    r = cli("train-base", other, "--out", out, "--steps", "3", "--save-every", "1", "--eval-every", "100",
            *BASE_FLAGS, "--resume")
    assert r.returncode == 0 and "training a new one" not in r.stdout  # the same data: reused as it is


class Payload:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_kill_between_the_checkpoint_renames_resumes_and_strays_are_cleaned(data_dir, tmp_path):
    from safetensors.torch import load_file
    flags = ["--steps", "12", "--save-every", "6", "--eval-every", "100", *BASE_FLAGS]
    full = tmp_path / "full"
    assert cli("train-base", data_dir, "--out", full, *flags).returncode == 0
    cut = tmp_path / "cut"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "DIE_AT_STEP": "8"}
    r = subprocess.run([sys.executable, "-c", DIE_AT_STEP, "train-base", str(data_dir), "--out", str(cut), *flags],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 9
    # the moment inside atomic_dir after the old checkpoint moved aside and before the new one moved in
    os.replace(cut / "checkpoint", cut / ".checkpoint.old.4242")
    (cut / ".checkpoint.half").mkdir()  # a temporary folder a kill left half written
    (cut / ".checkpoint.half" / "optimizer.bin").write_bytes(b"partial")
    r = cli("train-base", data_dir, "--out", cut, "--resume", *flags)
    assert r.returncode == 0 and "resumed from" in r.stdout + r.stderr, r.stderr[-2000:]
    assert not list(cut.glob(".checkpoint.*"))
    a, b = load_file(str(full / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_never_unpickles_code(data_dir, tmp_path):
    out = tmp_path / "run"
    flags = ["--steps", "4", "--save-every", "2", "--eval-every", "100", *BASE_FLAGS]
    assert cli("train-base", data_dir, "--out", out, "--steps", "2", *flags[2:]).returncode == 0
    marker = tmp_path / "pwned"
    torch.save({"state": Payload(str(marker))}, out / "checkpoint" / "optimizer.bin")
    r = cli("train-base", data_dir, "--out", out, "--resume", *flags)
    assert not marker.exists()
    assert r.returncode == 1 and "weights_only" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


def test_save_dtype_fp16_saves_half_the_bytes_with_tied_embeddings_kept_one_tensor(data_dir, tmp_path):
    from safetensors.torch import load_file

    from prompt_expander.expansion.resident import load_expander
    runs = {}
    for dtype in ("fp32", "fp16"):
        out = tmp_path / dtype
        r = cli("train-base", data_dir, "--out", out, "--steps", "2", "--save-every", "100", "--eval-every", "100",
                "--save-dtype", dtype, *BASE_FLAGS)
        assert r.returncode == 0, r.stderr[-2000:]
        runs[dtype] = load_file(out / "model.safetensors")
        assert f"weights saved in {dtype}" in (out / "README.md").read_text()
    assert runs["fp32"].keys() == runs["fp16"].keys()
    assert {v.dtype for v in runs["fp16"].values()} == {torch.float16}
    for k, v in runs["fp32"].items():  # the same run: the fp16 file is the fp32 weights, rounded
        torch.testing.assert_close(runs["fp16"][k].float(), v, rtol=1e-3, atol=1e-3)
    load_expander(str(tmp_path / "fp16")).expand("a castle", seed=1)


def test_the_machine_is_described_with_its_vector_units(tmp_path):
    from prompt_expander.train.loop import machine_description
    amx, avx2 = tmp_path / "amx", tmp_path / "avx2"
    amx.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx2 avx512f amx_tile\n"
                   "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx2 avx512f amx_tile\n")
    avx2.write_text("model name\t: AMD EPYC 7B13\nflags\t\t: fpu avx avx2 fma\n")
    assert machine_description(str(amx)).startswith("Intel(R) Xeon(R) Processor (AVX-512, AMX), ")
    assert machine_description(str(avx2)).startswith("AMD EPYC 7B13 (AVX2 only), ")
    assert "logical CPUs, torch" in machine_description(str(tmp_path / "missing"))


def test_the_cosine_schedule_a_fitted_run_switches_to_is_the_librarys_to_the_bit():
    from transformers import get_cosine_schedule_with_warmup

    from prompt_expander.train.loop import cosine_with_warmup
    for warmup, total in [(10, 11), (10, 537), (300, 7400), (0, 5)]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        library = get_cosine_schedule_with_warmup(opt, warmup, total).lr_lambdas[0]
        assert all(cosine_with_warmup(s, warmup, total) == library(s) for s in range(total + 3))


def test_fitted_steps_fill_the_time_left_with_validations_counted():
    from prompt_expander.train.loop import TrainConfig, fitted_steps
    cfg = TrainConfig(out="x", minutes=1.0, warmup=10, eval_every=10)
    assert fitted_steps(cfg, 10, 6.0, 0.1, val_batches=0) == 10 + int(54 * 0.97 / 0.1)
    assert fitted_steps(cfg, 10, 6.0, 0.1, val_batches=3) == 10 + int(54 * 0.97 / 0.11)  # 3 batches a 3rd each
    assert fitted_steps(cfg, 10, 70.0, 0.1, val_batches=0) == 11  # over time already: one step to end on


def test_a_run_fitted_to_minutes_ends_its_schedule_and_repeats_exactly_with_its_steps(data_dir, tmp_path):
    """--minutes picks the steps from the warm-up's speed; the run then is the --steps run of that many steps,
    killed and resumed or not."""
    from safetensors.torch import load_file
    flags = [*BASE_FLAGS, "--warmup", "10", "--eval-every", "50", "--save-every", "20"]  # the later --warmup wins
    fitted = tmp_path / "fitted"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "DIE_AT_STEP": "25"}
    r = subprocess.run([sys.executable, "-c", DIE_AT_STEP, "train-base", str(data_dir), "--out", str(fitted),
                        "--minutes", "0.2", *flags], env=env, capture_output=True, text=True)
    assert r.returncode == 9, r.stderr[-2000:]
    r = cli("train-base", data_dir, "--out", fitted, "--minutes", "0.2", "--resume", *flags)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((fitted / "training_summary.json").read_text())
    steps = summary["fitted_steps"]
    assert steps > 25 and summary["step"] == steps and summary["finished"]
    assert f"--steps {steps}" in (fitted / "README.md").read_text()
    plain = tmp_path / "plain"
    r = cli("train-base", data_dir, "--out", plain, "--steps", steps, *flags)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = load_file(str(fitted / "model.safetensors")), load_file(str(plain / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_minutes_needs_a_warm_up_to_time(data_dir, tmp_path):
    r = cli("train-base", data_dir, "--out", tmp_path / "m", "--minutes", "1", *BASE_FLAGS)  # --warmup 2
    assert r.returncode != 0 and "--warmup of at least 8" in r.stderr


# The CLI, with each process's tokenizer training and tokenising logged to $CALLS_LOG as "RANK what".
COUNTING_CLI = """
import os, sys
import prompt_expander.train.dataset as dataset
import prompt_expander.train.tokenizer as tokenizer
from prompt_expander.cli import main

def logged(what, fn):
    def wrapper(*args, **kw):
        with open(os.environ["CALLS_LOG"], "a") as f:
            f.write(os.environ.get("RANK", "0") + " " + what + "\\n")
        return fn(*args, **kw)
    return wrapper

tokenizer.train_bpe = logged("train_bpe", tokenizer.train_bpe)
dataset.TokenizedPrompts.build = classmethod(logged("tokenise", dataset.TokenizedPrompts.build.__func__))
sys.exit(main(sys.argv[1:]))
"""


def test_two_processes_share_one_schedule_and_one_voice(data_dir, tmp_path):
    """torchrun on the CPU (gloo) stands in for `accelerate launch` on several GPUs: accelerate had stepped the
    schedule once per process, so with 2 the cosine ran out at half the steps and rose again; and every process
    trained its own tokenizer and tokenised the corpus again into the same files."""
    out = tmp_path / "ddp"
    driver, calls = tmp_path / "counting_cli.py", tmp_path / "calls.log"
    driver.write_text(COUNTING_CLI)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "CALLS_LOG": str(calls)}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(driver), "train-base", str(data_dir), "--out", str(out), "--steps", "30",
                        "--save-every", "30", "--eval-every", "15", *BASE_FLAGS], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(calls.read_text().splitlines()) == ["0 tokenise", "0 tokenise", "0 train_bpe"]
    scheduler = torch.load(out / "checkpoint" / "scheduler.bin", weights_only=True)
    assert scheduler["last_epoch"] == 30 and scheduler["_last_lr"] == [0.0, 0.0]
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["step"] == 30 and summary["tokens_seen"] > 30 * 8 * 32  # both processes' rows count
    said = r.stdout + r.stderr
    assert said.count("step 30: train") == 1 and said.count("saved model to") == 1
