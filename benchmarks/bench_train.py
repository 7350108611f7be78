"""Training throughput (tokens/s): our train-base loop against the Hugging Face Trainer, same config and batch."""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prompt_expander.train.dataset import PackedBatches, TokenizedPrompts  # noqa: E402
from prompt_expander.train.loop import TrainConfig, run_training  # noqa: E402
from prompt_expander.fileio import write_json_atomic  # noqa: E402


def synthetic(n_prompts, vocab, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(10, 60, n_prompts)
    tokens = rng.integers(3, vocab, int(lengths.sum())).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return TokenizedPrompts(tokens, offsets)


def model(args):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=args.vocab, n_positions=args.seq, n_embd=args.n_embd,
                                      n_layer=args.n_layer, n_head=args.n_head, resid_pdrop=0, embd_pdrop=0,
                                      attn_pdrop=0))


def ours(args, data):
    """Steady-state tokens/s of run_training (the train-base loop), as it measures itself."""
    out = Path(tempfile.mkdtemp())
    batches = PackedBatches(data, args.seq, args.batch, 0, 0, 1)
    cfg = TrainConfig(out=str(out), steps=args.steps, batch_size=args.batch, eval_every=10**9, save_every=10**9,
                      precision=args.precision)
    state = run_training(model(args), batches, None, cfg, desc="train-base loop")
    shutil.rmtree(out, ignore_errors=True)
    return state["steady_tokens_per_s"]


def hf_trainer(args, data):
    from transformers import Trainer, TrainerCallback, TrainingArguments
    batches = PackedBatches(data, args.seq, args.batch, 0, 0, 1)
    rows = []
    for i in range(args.steps):
        ids, labels = batches.batch(i)
        rows += [{"input_ids": torch.from_numpy(a), "labels": torch.from_numpy(b)} for a, b in zip(ids, labels)]
    out = tempfile.mkdtemp()
    kw = dict(output_dir=out, per_device_train_batch_size=args.batch, max_steps=args.steps, learning_rate=1e-3,
              logging_steps=10**9, save_strategy="no", report_to=[], disable_tqdm=True, dataloader_num_workers=0,
              bf16=args.precision == "bf16")
    # transformers 4.34 renamed no_cuda to use_cpu; A1111's 4.30.2 knows only the old name
    cpu_flag = "use_cpu" if "use_cpu" in TrainingArguments.__dataclass_fields__ else "no_cuda"
    kw[cpu_flag] = not torch.cuda.is_available()
    targs = TrainingArguments(**kw)

    class Clock(TrainerCallback):
        # Same window as ours: from the end of the warm-up steps to the end of the last step.
        def on_step_end(self, a, state, control, **k):
            if state.global_step == args.warmup_steps:
                self.t0 = time.perf_counter()
            self.t1 = time.perf_counter()

    clock = Clock()
    trainer = Trainer(model=model(args), args=targs, train_dataset=rows, callbacks=[clock],
                      data_collator=lambda b: {k: torch.stack([x[k] for x in b]) for k in b[0]})
    trainer.train()
    elapsed = clock.t1 - clock.t0
    tokens = sum(int((r["labels"] != -100).sum()) for r in rows[args.warmup_steps * args.batch:])
    shutil.rmtree(out, ignore_errors=True)
    return tokens / elapsed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--n-head", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup-steps", type=int, default=3, help="untimed steps (ours skips 3 as well)")
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    data = synthetic(20000, args.vocab)
    t_ours = ours(args, data)
    t_hf = hf_trainer(args, data)
    print(f"train-base loop: {t_ours:,.0f} tokens/s; HF Trainer: {t_hf:,.0f} tokens/s; ratio x{t_ours / t_hf:.2f} "
          f"({args.n_layer}x{args.n_embd}, vocab {args.vocab}, batch {args.batch}x{args.seq}, {args.precision})")
    result = {"ours_tok_s": t_ours, "hf_trainer_tok_s": t_hf, "ratio": t_ours / t_hf, **vars(args)}
    if args.json:
        write_json_atomic(args.json, result)
    return result


if __name__ == "__main__":
    main()
