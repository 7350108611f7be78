"""The training loop shared by train-base and train-lora: accelerate, resumable checkpoints, validation."""
from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import pickle
import platform
import shutil
import time
from datetime import timedelta
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..fileio import atomic_dir, plain_file_mode, write_json_atomic
from .kernels import training_kernels

CHECKPOINT_DIR = "checkpoint"


@dataclass
class TrainConfig:
    out: str
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 500
    save_every: int = 500
    max_val_batches: int = 50
    seed: int = 1234
    precision: str = "auto"
    resume: bool = False
    max_minutes: float = 0.0
    minutes: float = 0.0  # fit the steps to this much training time, measured during the warm-up (see fitted_steps)
    early_stop_patience: int = 0  # stop after this many validations without improvement (0 = never)
    extra: dict = field(default_factory=dict)


def add_loop_arguments(p, steps=1000, batch_size=32, lr=1e-3, warmup=100, save_every=500) -> None:
    g = p.add_argument_group("training loop")
    g.add_argument("--steps", type=int, default=steps, help=f"total optimizer steps (default {steps})")
    g.add_argument("--batch-size", type=int, default=batch_size, help=f"rows per step (default {batch_size})")
    g.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default {lr})")
    g.add_argument("--warmup", type=int, default=warmup, help=f"linear warm-up steps (default {warmup})")
    g.add_argument("--weight-decay", type=float, default=0.1)
    g.add_argument("--eval-every", type=int, default=save_every, help="validate every N steps")
    g.add_argument("--save-every", type=int, default=save_every, help="checkpoint every N steps")
    g.add_argument("--max-val-batches", type=int, default=50)
    g.add_argument("--seed", type=int, default=1234)
    g.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="auto: bf16 autocast on CPUs and GPUs that support it, else fp16 on GPU, fp32 on CPU")
    g.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint if it exists")
    g.add_argument("--max-minutes", type=float, default=0.0,
                   help="stop cleanly (checkpoint saved) after this many minutes; resume later with --resume")
    g.add_argument("--minutes", type=float, default=0.0,
                   help="instead of --steps, train for about this many minutes (validations included; the final "
                        "save and evaluation come after): the steps are fitted to the speed measured during the "
                        "warm-up, so the cosine schedule still ends at the last step. The steps chosen are "
                        "printed and recorded; --steps N with them repeats the run exactly")


def is_main_process() -> bool:
    """Under `accelerate launch` or torchrun every process runs the command; rank 0 speaks and writes for all."""
    return int(os.environ.get("RANK", "0")) == 0


def say(*args, **kw) -> None:
    """print, on the main process only."""
    if is_main_process():
        print(*args, **kw)


PREPARE_WAIT_MINUTES = 120


@contextlib.contextmanager
def main_process_first():
    """Under torchrun or `accelerate launch`, the main process builds what the run reads (tokenizer, token caches,
    subsets, word lists) while the others wait, and they then find it built: each used to train its own tokenizer
    and tokenise the whole corpus again, minutes of work per process on the real data, into the same files."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield
        return
    from accelerate import PartialState

    # The same device choice as run_training's Accelerator, which shares this state. The others wait at a barrier
    # for as long as the corpus takes, which on a large one can pass NCCL's default of 10 minutes.
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(minutes=PREPARE_WAIT_MINUTES))
    with state.main_process_first():
        yield


def loop_config(args, **extra) -> TrainConfig:
    return TrainConfig(out=args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                       warmup=args.warmup, weight_decay=args.weight_decay, eval_every=args.eval_every,
                       save_every=args.save_every, max_val_batches=args.max_val_batches, seed=args.seed,
                       precision=args.precision, resume=args.resume, max_minutes=args.max_minutes,
                       minutes=getattr(args, "minutes", 0.0), extra=extra)


# The warm-up steps that time a --minutes run: the first ones pay for allocation and kernel warm-up.
FIT_SKIP_STEPS, FIT_MIN_TIMED_STEPS = 3, 5
# Of the time left, what the fitted steps may fill: the rest absorbs a slower spell and the checkpoints.
FIT_SHARE = 0.97


def check_fit_config(cfg: TrainConfig) -> None:
    from ..errors import InputError
    if cfg.minutes < 0 or not math.isfinite(cfg.minutes):
        raise InputError(f"--minutes must be a positive number of minutes, got {cfg.minutes}")
    if cfg.minutes and cfg.warmup < FIT_SKIP_STEPS + FIT_MIN_TIMED_STEPS:
        raise InputError(f"--minutes times the warm-up steps, so it needs --warmup of at least "
                         f"{FIT_SKIP_STEPS + FIT_MIN_TIMED_STEPS} (got {cfg.warmup})")


def fitted_steps(cfg: TrainConfig, step: int, elapsed_s: float, step_s: float, val_batches: int) -> int:
    """The total steps for a run fitted to cfg.minutes, decided at `step` (the end of the warm-up), after
    `elapsed_s` of training at `step_s` a step. A validation pass costs about a third of a step per batch
    (forward only) and comes every eval_every steps. Warm-up learning rates do not depend on the total, so a
    run with --steps set to the result takes the same steps exactly."""
    per_step = step_s * (1 + val_batches / (3 * max(cfg.eval_every, 1)))
    left = cfg.minutes * 60 - elapsed_s
    return step + max(1, int(left * FIT_SHARE / per_step))


def cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    """transformers' get_cosine_schedule_with_warmup factor, with a total that a --minutes run sets after its
    warm-up (the library's closes over it); the same floats, so a fitted run and --steps agree exactly."""
    if step < warmup:
        return float(step) / float(max(1, warmup))
    progress = float(step - warmup) / float(max(1, total - warmup))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))


def cpu_supports_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def resolve_precision(precision: str) -> str:
    """Map --precision to accelerate's mixed_precision value."""
    if precision == "fp32":
        return "no"
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_supports_bf16() else "no"


# The vector units that decide which CPU kernels run, hence speed (docs/benchmarks.md): "Intel Xeon" alone
# names machines with and without AMX, "AMD EPYC" ones with and without AVX-512.
_CPU_FEATURES = (("avx512f", "AVX-512"), ("avx512_bf16", "AVX-512 BF16"), ("amx_tile", "AMX"))


def machine_description(cpuinfo: str = "/proc/cpuinfo") -> str:
    """CPU model and vector units, logical CPUs, torch version and GPU, for model cards and benchmark docs."""
    name, flags = None, set()
    try:
        with open(cpuinfo) as f:
            for line in f:  # the first processor's lines serve: a VM's CPUs are all the same model
                key, _, value = line.partition(":")
                if key.strip() == "model name" and name is None:
                    name = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
                if name is not None and flags:
                    break
    except OSError:
        pass
    cpu = name or platform.processor() or platform.machine()
    units = [unit for flag, unit in _CPU_FEATURES if flag in flags] or (["AVX2 only"] if "avx2" in flags else [])
    if units:
        cpu += f" ({', '.join(units)})"
    desc = f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}"
    if torch.cuda.is_available():
        desc += f", GPU {torch.cuda.get_device_name(0)}"
    return desc


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


@contextlib.contextmanager
def weights_only_loads():
    """Every torch.load inside runs with weights_only=True, whatever the caller (accelerate) asked for: a
    checkpoint folder someone handed over can hold tensors and plain data, never code that runs on load."""
    real = torch.load

    def load(*args, **kwargs):
        kwargs["weights_only"] = True
        return real(*args, **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = real


def load_state_safely(accelerator, ckpt: Path) -> None:
    from ..errors import DataError
    try:
        with weights_only_loads():
            accelerator.load_state(str(ckpt))
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{ckpt}: the checkpoint cannot be loaded as plain tensors and data (weights_only), so "
                        f"it is not resumed ({first}); start over without --resume, or with torch >= 2.4") from None


def check_resumable(saved: dict, data_fingerprint: str | None, cfg: TrainConfig, ckpt: Path) -> None:
    """Refuse to continue a checkpoint on other training data or another base model: the steps would go on
    silently over a different stream (a train-lora folder reused with new --select keywords did)."""
    from ..errors import DataError

    why = None
    if saved.get("data") and data_fingerprint and saved["data"] != data_fingerprint:
        why = "was trained on other data or another tokenisation"
    was_base = (saved.get("config") or {}).get("extra", {}).get("base_fingerprint")
    base = cfg.extra.get("base_fingerprint")
    if was_base and base and was_base != base:
        why = "was trained on another base model"
    if why:
        raise DataError(f"{ckpt} {why}, so --resume cannot continue it here; use a new --out, or drop --resume "
                        "to start over in this folder")


def recover_checkpoint(ckpt: Path) -> None:
    """After a kill: make sure OUT/checkpoint is the newest complete checkpoint, and drop the temporary ones.

    atomic_dir swaps a checkpoint in with two renames; a kill between them leaves the old one and the new one
    under temporary names and no OUT/checkpoint. A checkpoint is complete once its train_state.json exists
    (written last)."""
    strays = [d for d in ckpt.parent.glob(f".{ckpt.name}.*") if d.is_dir()]
    if not strays:
        return

    def step(d):
        try:
            return json.loads((d / "train_state.json").read_text())["step"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    if step(ckpt) is None:
        complete = [(step(d), d) for d in strays if step(d) is not None]
        if complete:
            best = max(complete, key=lambda x: x[0])[1]
            if ckpt.exists():
                shutil.rmtree(ckpt, ignore_errors=True)
            os.replace(best, ckpt)
            strays.remove(best)
    for d in strays:
        shutil.rmtree(d, ignore_errors=True)


@torch.no_grad()
def validation_loss(model, batches, device, max_batches: int, autocast) -> float:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for n, (ids, labels) in enumerate(batches):
        if n >= max_batches:
            break
        ids, labels = torch.from_numpy(ids).to(device), torch.from_numpy(labels).to(device)
        with autocast():
            logits = model(input_ids=ids).logits.float()
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum")
        total += loss.item()
        count += int((labels[:, 1:] != -100).sum())
    model.train(was_training)
    return total / max(count, 1)


def run_training(model, train, val, cfg: TrainConfig, params=None, save_final=None, desc="train") -> dict:
    """Train `model` on PackedBatches `train`; return the run summary (also written to OUT/train_state.json)."""
    from accelerate import Accelerator
    from tqdm import tqdm
    from transformers import get_cosine_schedule_with_warmup

    check_fit_config(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    # step_scheduler_with_optimizer=False: accelerate would otherwise step the schedule once per process at every
    # step (it assumes a data loader it shortened), and with 2 GPUs the cosine ran out at half the steps and rose.
    accelerator = Accelerator(mixed_precision=resolve_precision(cfg.precision), cpu=not torch.cuda.is_available(),
                              step_scheduler_with_optimizer=False)
    torch.manual_seed(cfg.seed)
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # the fused kernel (CPU and GPU) is markedly faster than the per-tensor loop
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=True)
    except (RuntimeError, TypeError, ValueError):
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))
    scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.warmup, cfg.steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    ckpt = out / CHECKPOINT_DIR
    state = {"step": 0, "tokens_seen": 0, "elapsed_s": 0.0, "history": [], "config": asdict(cfg),
             "machine": machine_description(), "precision": accelerator.mixed_precision}
    if accelerator.is_main_process:
        recover_checkpoint(ckpt)
    accelerator.wait_for_everyone()
    data_fingerprint = getattr(getattr(train, "data", None), "fingerprint", "") or None
    if cfg.resume and (ckpt / "train_state.json").exists():
        saved = json.loads((ckpt / "train_state.json").read_text())
        check_resumable(saved, data_fingerprint, cfg, ckpt)
        load_state_safely(accelerator, ckpt)
        # This invocation's settings (a longer --steps, say) are what the summary should show.
        state = {**saved, "config": asdict(cfg)}
        accelerator.print(f"resumed from {ckpt} at step {state['step']}")
    elif ckpt.exists() and not cfg.resume:
        accelerator.print(f"note: {ckpt} exists; starting over (pass --resume to continue it)")
    state["data"] = data_fingerprint  # what check_resumable compares on the next --resume
    if cfg.minutes:
        if state.get("fitted_steps"):  # resuming a fitted run: its steps were chosen by its first invocation
            set_total_steps(cfg, state, scheduler, state["fitted_steps"])
        elif state["step"] >= cfg.warmup:
            from ..errors import InputError
            raise InputError(f"{ckpt} is past its warm-up and was not fitted to a time, so --minutes cannot size "
                             "it; resume it with --steps")
    device = device_description(accelerator.device)
    if state.get("device") and device not in state["device"].split(", then "):
        device = f"{state['device']}, then {device}"  # a run resumed elsewhere says where each part ran
    state["device"] = device

    def save_checkpoint():
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            with atomic_dir(ckpt) as tmp:
                accelerator.save_state(str(tmp))
                write_json_atomic(tmp / "train_state.json", state)
        accelerator.wait_for_everyone()

    rank, world = accelerator.process_index, accelerator.num_processes
    model.train()
    started = time.time()
    base_elapsed = state["elapsed_s"]
    deadline = started + cfg.max_minutes * 60 if cfg.max_minutes > 0 else math.inf
    bar = tqdm(total=cfg.steps, initial=state["step"], desc=desc, disable=not accelerator.is_local_main_process,
               dynamic_ncols=True)
    window_tokens, window_start, loss_ema = 0, time.time(), None

    def note(message: str) -> None:  # each process's loss differs; the main one speaks for the run
        if accelerator.is_main_process:
            bar.write(message)

    stopped_early = False
    timed_tokens, timed_s, steps_this_run = 0, 0.0, 0
    step_times = []  # this run's warm-up steps, while a --minutes run is being fitted
    with training_kernels(model, accelerator.device):
        while state["step"] < cfg.steps:
            step_start = time.perf_counter()
            ids, labels = train.batch(state["step"], rank, world)
            ids = torch.from_numpy(ids).to(accelerator.device)
            labels = torch.from_numpy(labels).to(accelerator.device)
            with accelerator.autocast():
                loss = model(input_ids=ids, labels=labels).loss
            accelerator.backward(loss)
            if cfg.grad_clip:
                accelerator.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            if not getattr(optimizer, "step_was_skipped", False):  # an fp16 overflow skipped it: the schedule waits
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            n_tok = int((labels != -100).sum()) * world  # .sum() waits for the step's kernels, so timing holds
            steps_this_run += 1
            step_took = time.perf_counter() - step_start
            if cfg.minutes and not state.get("fitted_steps"):
                step_times.append(step_took)
            if steps_this_run > FIT_SKIP_STEPS:  # steady state: the first steps pay for allocation and warm-up
                timed_tokens += n_tok
                timed_s += step_took
            state["step"] += 1
            state["tokens_seen"] += n_tok
            state["elapsed_s"] = base_elapsed + time.time() - started
            window_tokens += n_tok
            loss_value = loss.item()
            loss_ema = loss_value if loss_ema is None else 0.98 * loss_ema + 0.02 * loss_value
            bar.update(1)
            if state["step"] % 10 == 0 or state["step"] == cfg.steps:
                rate = window_tokens / max(time.time() - window_start, 1e-9)
                bar.set_postfix(loss=f"{loss_ema:.3f}", tok_s=f"{rate:,.0f}")
                window_tokens, window_start = 0, time.time()
            step = state["step"]
            if cfg.minutes and not state.get("fitted_steps") and step == cfg.warmup:
                steady = step_times[FIT_SKIP_STEPS:] if len(step_times) >= FIT_SKIP_STEPS + FIT_MIN_TIMED_STEPS \
                    else step_times  # a run resumed late in its warm-up: the slower early steps err on the safe side
                # the mean, not the median: the occasional slow step (a collection, a sync) recurs all run long
                step_s = torch.tensor(sum(steady) / len(steady), device=accelerator.device)
                step_s = float(accelerator.reduce(step_s, "max"))  # every process takes the same steps
                val_batches = 0 if val is None else min(cfg.max_val_batches, math.ceil(val.batches_per_epoch()))
                total = fitted_steps(cfg, step, base_elapsed + time.time() - started, step_s, val_batches)
                set_total_steps(cfg, state, scheduler, total)
                bar.total = total
                bar.refresh()
                note(f"fitted to {cfg.minutes} min: {total} steps at {step_s * 1000:.1f} ms a step "
                     f"(repeat exactly with --steps {total})")
            if val is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
                vloss = validation_loss(model, val.all_batches(), accelerator.device, cfg.max_val_batches,
                                        accelerator.autocast)
                state["history"].append({"step": step, "train_loss": round(loss_ema, 4), "val_loss": round(vloss, 4),
                                         "val_ppl": round(math.exp(vloss), 2), "tokens_seen": state["tokens_seen"]})
                note(f"step {step}: train {loss_ema:.4f}  val {vloss:.4f}  ppl {math.exp(vloss):.2f}")
                if vloss < state.get("best_val_loss", math.inf) - 1e-4:
                    state["best_val_loss"], state["evals_without_gain"] = vloss, 0
                else:
                    state["evals_without_gain"] = state.get("evals_without_gain", 0) + 1
                if cfg.early_stop_patience and state["evals_without_gain"] >= cfg.early_stop_patience:
                    note(f"validation loss has not improved for {cfg.early_stop_patience} evaluations: stopping")
                    save_checkpoint()
                    state["early_stopped"] = True
                    break
            if step % cfg.save_every == 0 or step == cfg.steps:
                save_checkpoint()
            if time.time() > deadline:
                stopped_early = True
                if step % cfg.save_every:
                    save_checkpoint()
                note(f"stopping after {cfg.max_minutes} min at step {step}; continue with --resume")
                break
    bar.close()
    state["finished"] = state["step"] >= cfg.steps or state.get("early_stopped", False)
    if timed_s:
        state["steady_tokens_per_s"] = timed_tokens / timed_s
    state["train_loss"] = loss_ema
    if accelerator.is_main_process and save_final is not None and not stopped_early:
        save_final(accelerator.unwrap_model(model), state)
    accelerator.wait_for_everyone()
    return state


def set_total_steps(cfg: TrainConfig, state: dict, scheduler, total: int) -> None:
    """Make `total` the run's last step: the loop's, the summary's and the cosine schedule's."""
    cfg.steps = total
    state["fitted_steps"] = state["config"]["steps"] = total
    lambda_lr = getattr(scheduler, "scheduler", scheduler)  # under accelerate's wrapper
    factor = functools.partial(cosine_with_warmup, warmup=cfg.warmup, total=total)
    lambda_lr.lr_lambdas = [factor] * len(lambda_lr.lr_lambdas)  # one per parameter group


def save_pretrained_atomic(model, out_dir, **kwargs) -> None:
    """save_pretrained into a temporary folder, then move each file into place."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".saving.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(str(tmp), safe_serialization=True, **kwargs)
        for f in tmp.iterdir():
            plain_file_mode(f)  # some transformers versions write 0600 files through their own temp files
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
