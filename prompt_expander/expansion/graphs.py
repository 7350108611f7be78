"""CUDA graphs for the fast decode: one step over a static KV cache, captured per row count and context bucket."""
from __future__ import annotations

import logging
import os
from collections import OrderedDict

import torch

log = logging.getLogger("prompt_expander")

# Opt-in until a GPU session has measured and checked it: no session that built this had a GPU.
GRAPHS_ENV = "PROMPT_EXPANDER_CUDA_GRAPHS"
ENABLED = os.environ.get(GRAPHS_ENV, "").strip().lower() in ("1", "true", "yes", "on")

FIRST_BUCKET = 64
MAX_ROWS = 16  # more variations than this decode eagerly: their cache is big and the launches matter less
MAX_CACHE_BYTES = 256 * 2**20  # nor a static KV cache larger than this
MAX_GRAPHS = 8  # captured steps kept per model, least recently used dropped first
WARMUP_STEPS = 2  # cuBLAS picks and allocates its workspace before capture, not during it
SELF_CHECK_TOLERANCE = 1e-2  # relative: a replay reading stale memory is off by far more than rounding


def bucket_for(length: int, n_positions: int) -> int:
    """The cache length a decode of `length` positions is captured at: powers of two from 64, capped."""
    bucket = FIRST_BUCKET
    while bucket < length:
        bucket *= 2
    return max(length, min(bucket, n_positions))


class StaticStep:
    """One decode step over buffers whose shapes and addresses never change, so that it can be captured.

    Reads `tokens` [rows] and `pos` (a one-element tensor) on the model's device, writes this step's keys
    and values at `pos` in a cache [2, rows, heads, bucket, head_dim] per block, and attends over the
    whole bucket with the positions after `pos` masked. Weights are read by address: a graph stays right
    while they are rewritten in place (a style mixed in) and must be dropped when they move.
    """

    def __init__(self, fast, rows: int, bucket: int):
        dev, dt = fast.wte.device, fast.wte.dtype
        self.fast, self.rows, self.bucket = fast, rows, bucket
        self.tokens = torch.zeros(rows, dtype=torch.long, device=dev)
        self.pos = torch.zeros(1, dtype=torch.long, device=dev)
        # Zeros, not empty: masked positions still enter the attention's matmul, and NaN * 0 is NaN.
        self.kv = [torch.zeros(2, rows, fast.n_head, bucket, fast.head_dim, device=dev, dtype=dt)
                   for _ in fast.blocks]
        self.replay = None  # set once captured: runs the recorded step and refreshes self.out
        self.out: torch.Tensor | None = None
        self.graph = None  # what the replay needs kept alive
        self.checked = False

    @staticmethod
    def cache_bytes(fast, rows: int, bucket: int) -> int:
        return 2 * rows * fast.n_embd * bucket * len(fast.blocks) * fast.wte.element_size()

    def compute(self) -> torch.Tensor:
        """The step itself, eagerly: the function a graph records."""
        return self.fast.step_rows(self.tokens, self.pos.expand(self.rows), self.bucket, self.kv)

    def load(self, kv: list[torch.Tensor], length: int) -> None:
        """Take over the first `length` positions of a prefilled cache (FastGPT2.prefill's layout)."""
        for mine, theirs in zip(self.kv, kv):
            mine[:, :, :, :length].copy_(theirs[:, :, :, :length])

    def run(self, tokens: torch.Tensor, pos: int) -> torch.Tensor:
        """Logits for `tokens` at `pos`. The tensor returned is overwritten by the next run."""
        self.tokens.copy_(tokens.view(-1), non_blocking=True)
        self.pos.fill_(pos)
        if self.replay is None:
            return self.compute()
        if not self.checked:
            self.checked = True
            if not self._replay_matches():
                return self.compute()
        self.replay()
        return self.out

    def _replay_matches(self) -> bool:
        """First use: the replay must give what the eager step gives on the same inputs, up to rounding.

        Both write the same keys and values at `pos`, so running both leaves the cache as one would."""
        want = self.compute().float()
        self.replay()
        got = self.out.float()
        scale = float(want.abs().max()) + 1.0
        if bool(torch.isfinite(got).all()) and float((got - want).abs().max()) <= SELF_CHECK_TOLERANCE * scale:
            return True
        self.replay, self.out = None, None
        self.fast.graphs.disable("a replayed step did not match the eager one")
        return False


def capture_cuda(step: StaticStep):
    """Record step.compute() in a CUDA graph; returns (replay, output buffer, what must be kept alive)."""
    device = step.tokens.device
    current = torch.cuda.current_stream(device)
    side = torch.cuda.Stream(device=device)
    side.wait_stream(current)
    with torch.cuda.stream(side):
        for _ in range(WARMUP_STEPS):
            step.compute()
    current.wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # thread_local: a host thread using CUDA meanwhile is not an error for it, only for this capture.
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        out = step.compute()
    return graph.replay, out, graph


CAPTURE = capture_cuda  # tests put an eager stand-in here to run the bookkeeping on CPU
DEVICE_TYPES = ("cuda",)  # and add "cpu" here


class DecodeGraphs:
    """The captured steps of one model, keyed by (slot, rows, bucket), dropped when its weights move."""

    def __init__(self, fast):
        self.fast = fast
        self.steps: OrderedDict[tuple, StaticStep] = OrderedDict()
        self.weights = None
        self.disabled: str | None = None

    def disable(self, why: str) -> None:
        if self.disabled is None:
            log.warning("Prompt Expander: CUDA graphs off for this model (%s); decoding without them", why)
        self.disabled = why
        self.steps.clear()

    def release(self) -> None:
        """Free every captured step (the memory goes back to torch's allocator)."""
        self.steps.clear()
        self.weights = None

    def _weights_signature(self):
        return tuple((p.data_ptr(), p.dtype, p.device) for p in self.fast.model.parameters())

    def step(self, rows: int, length: int, kv: list[torch.Tensor], filled: int, slot: int = 0) -> StaticStep | None:
        """A captured step for `rows` rows and `length` positions, holding the prefilled cache `kv`, or None
        where graphs do not apply (then the caller decodes as before)."""
        if self.disabled is not None or rows > MAX_ROWS:
            return None
        bucket = bucket_for(length, self.fast.n_positions)
        if StaticStep.cache_bytes(self.fast, rows, bucket) > MAX_CACHE_BYTES:
            return None
        signature = self._weights_signature()
        if signature != self.weights:  # moved or cast since the capture: the graphs read freed memory
            self.release()
            self.weights = signature
        key = (slot, rows, bucket)
        static = self.steps.get(key)
        if static is None:
            static = StaticStep(self.fast, rows, bucket)
            try:
                static.replay, static.out, static.graph = CAPTURE(static)
            except Exception as e:  # an op or a driver that cannot be captured: today's path instead
                self.disable(f"capture failed: {type(e).__name__}: {e}")
                return None
            self.steps[key] = static
            while len(self.steps) > MAX_GRAPHS:
                self.steps.popitem(last=False)
        self.steps.move_to_end(key)
        static.load(kv, filled)
        return static


def graphs_for(fast) -> DecodeGraphs | None:
    """The model's captured steps when graphs are on and it decodes on CUDA, else None."""
    if not ENABLED or fast.wte.device.type not in DEVICE_TYPES:
        return None
    if fast.graphs is None:
        fast.graphs = DecodeGraphs(fast)
    return None if fast.graphs.disabled is not None else fast.graphs


def release_graphs(model) -> None:
    """Drop a model's captured steps, and the unconditional prefill its decode loop keeps beside them (see
    decoding.FastGPT2.unconditional), e.g. before a host moves it off the GPU."""
    fast = getattr(model, "_prompt_expander_fast", None)
    if fast is not None:
        fast.forget_unconditional()
    graphs = getattr(fast, "graphs", None)
    if graphs is not None:
        graphs.release()
