"""Decode loops: a fast KV-cache loop for GPT-2 models, and the stock `generate()` path as reference."""
from __future__ import annotations

import math
from collections import Counter
from contextlib import contextmanager
from typing import Callable

import torch
import torch.nn.functional as F

from . import graphs as decode_graphs
from .sampling import RowDecoder


WEIGHTS_EPOCH = "_prompt_expander_weights_epoch"


def weights_changed(model) -> None:
    """Tell the fast loop that weights were rewritten in place, so its row-major copies are stale."""
    setattr(model, WEIGHTS_EPOCH, getattr(model, WEIGHTS_EPOCH, 0) + 1)


def weight_signature(w: torch.Tensor, epoch: int) -> tuple:
    """What tells a weight unchanged: its storage, dtype and version counter (inference tensors have none: the
    model's weights_changed epoch stands in)."""
    return (w.data_ptr(), w.dtype, -1 if w.is_inference() else w._version, epoch)


class StreamedWeight:
    """A weight [out, in] laid out for _stream_matmul: row blocks as one [chunks, out // chunks, in] view,
    plus the few rows left over when `out` does not divide (GPT-2's 50257-row head)."""

    def __init__(self, weight: torch.Tensor, chunks: int):
        weight = weight.contiguous()  # a no-op for the weights transformers makes
        out_dim = weight.shape[0]
        step = out_dim // chunks
        self.cut = step * chunks
        self.blocks = weight[:self.cut].view(chunks, step, weight.shape[1])
        self.rest = weight[self.cut:] if self.cut < out_dim else None


def _stream_matmul(x: torch.Tensor, weight: StreamedWeight) -> torch.Tensor:
    """x [rows, in] @ weight.T for a few rows, as one bmm over row blocks of the weight.

    At decode time each step reads every weight once for a handful of rows, so speed is how fast the
    weights stream through memory. With the MKL in the pip wheels, F.linear/addmm take a GEMV path that
    streams them at a third of the speed of this bmm on the CPUs we measured (benchmarks/bench_decode.py);
    the result differs only by summation order, i.e. float rounding.
    """
    rows, chunks = x.shape[0], weight.blocks.shape[0]
    # x.t(), not x.view(...): the strides of the right operand pick bmm's kernel, and this one is fast.
    out = torch.bmm(weight.blocks, x.t().unsqueeze(0).expand(chunks, -1, -1)).view(weight.cut, rows).t()
    if weight.rest is not None:
        out = torch.cat([out, x @ weight.rest.t()], dim=-1)
    return out


_PACKED_OK: dict[torch.dtype, bool] = {}


def packed_linear_available(dtype: torch.dtype) -> bool:
    """Whether this torch build can pre-pack CPU weights of `dtype` for oneDNN (a private op: probe it)."""
    if dtype not in _PACKED_OK:
        try:  # every form the decode loop calls: plain, GELU fused, residual fused
            ones, x = torch.ones(4, 4, dtype=dtype), torch.ones(3, 4, dtype=dtype)
            plain, biased = PackedWeight(ones), PackedWeight(ones, torch.zeros(4, dtype=dtype))
            _PACKED_OK[dtype] = bool((plain(x) == 4).all()) and bool(
                (biased(x, tanh_gelu=True) > 3.9).all()) and bool((biased(x, residual=x) == 5).all())
        except Exception:  # an old torch, a build without oneDNN, or a CPU without the instructions for dtype
            _PACKED_OK[dtype] = False
    return _PACKED_OK[dtype]


FP16_PROBE_ROWS = 48  # row counts the probe checks; a call with more rows goes in chunks


class Fp16RowPlan:
    """How many rows each call of FBGEMM's fp16-weight matmul computes, so that every row takes the same path.

    FBGEMM splits a call's rows among kernels of a few rows each. On the AVX-512 CPUs we measured, every kernel
    gives a row the same bits; on an AVX2-only AMD EPYC the 1-row and the 2-row kernel each sum in their own
    way, so one expansion with contrast (2 rows) and 8 variations (16 rows) gave a row different bits, and
    variation i could differ from seed + i alone. A call whose row count would use such a kernel is padded with
    zero rows to the next count whose rows all take the common path (2 -> 3 there), and larger calls go in
    chunks of the largest such count: the cost is a few rows of arithmetic, not another read of the weights.
    """

    def __init__(self, padded: tuple[int, ...]):
        self.padded = padded  # padded[m - 1]: the rows to compute for m rows, for m up to the chunk
        self.chunk = len(padded)

    @classmethod
    def from_results(cls, results: list[torch.Tensor]) -> "Fp16RowPlan | None":
        """A plan from the products of 1, 2, ... identical rows (results[m - 1] has m rows): the common result is
        the one most rows got, and a row count is kept when all its rows got it. None if no count is kept."""
        rows = [[tuple(row.tolist()) for row in result] for result in results]
        common = Counter(row for result in rows for row in result).most_common(1)[0][0]
        kept = [m for m, result in enumerate(rows, 1) if all(row == common for row in result)]
        if not kept:
            return None
        return cls(tuple(next(k for k in kept if k >= m) for m in range(1, kept[-1] + 1)))

    def __call__(self, x: torch.Tensor, packed, buffers: dict) -> torch.Tensor:
        """x @ weight.T (+ its packed bias) through FBGEMM, padded and chunked as the plan says. `buffers` keeps
        the padded inputs, by shape, between calls: allocating and concatenating them at every call cost more
        than the padded rows' arithmetic (a third of a step's matmul time)."""
        n = x.shape[0]
        if n > self.chunk:
            return torch.cat([self(x[start:start + self.chunk], packed, buffers) for start in range(0, n, self.chunk)])
        rows = self.padded[n - 1]
        if rows == n:
            return _fp16_linear(x, packed)
        buffer = buffers.get((rows, x.shape[1]))
        if buffer is None:
            with torch.inference_mode(False):  # usable in and out of inference mode
                buffer = buffers[rows, x.shape[1]] = torch.zeros(rows, x.shape[1], dtype=x.dtype)
        buffer[:n] = x
        return _fp16_linear(buffer, packed)[:n]


@contextmanager
def ieee_fp32_matmul(device: torch.device):
    """TF32 off on CUDA while a decode runs, and back as the host had it after. Hosts turn TF32 on (A1111 does on
    Ampere and newer GPUs), and its 10-bit mantissa would change a seed's text as often as fp16 does, so the
    same workflow would write one prompt on that GPU and another on a CPU or an older card."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


_FP16_PLAN: list[Fp16RowPlan | None] = []


_FP16_OP: list = []


def _fp16_linear(x: torch.Tensor, packed) -> torch.Tensor:
    """FBGEMM's fp16-weight matmul, called through its overload's C++ entry: the op's packet, and the overload's
    own __call__, check every call's arguments for fake script objects in Python first (a few microseconds,
    33 times a step), which the decode's tensors never are."""
    if not _FP16_OP:
        overload = torch.ops.quantized.linear_dynamic_fp16.default
        _FP16_OP.append(getattr(overload, "_op", overload))
    return _FP16_OP[0](x, packed)


def _probe_fp16_rows() -> Fp16RowPlan | None:
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(64, 256, generator=g).half().float()
    packed = torch.ops.quantized.linear_prepack_fp16(weight, None)
    row = torch.randn(1, 256, generator=g)
    results = [torch.ops.quantized.linear_dynamic_fp16(row.expand(m, -1).contiguous(), packed)
               for m in range(1, FP16_PROBE_ROWS + 1)]
    if not torch.allclose(results[0], row @ weight.t(), rtol=1e-4, atol=1e-4):
        return None
    return Fp16RowPlan.from_results(results)


def fp16_row_plan() -> Fp16RowPlan | None:
    """This CPU's Fp16RowPlan, or None where torch has no FBGEMM (ARM builds, old torch). Probed once."""
    if not _FP16_PLAN:
        try:
            _FP16_PLAN.append(_probe_fp16_rows())
        except Exception:  # a build without FBGEMM (ARM), or an old torch
            _FP16_PLAN.append(None)
    return _FP16_PLAN[0]


def fp16_weight_linear_available() -> bool:
    """Whether this torch build has FBGEMM's matmul of fp32 rows by fp16 weights (x86 builds do; probe it)."""
    return fp16_row_plan() is not None


def holds_fp16_values(weight: torch.Tensor) -> bool:
    """Whether every value of an fp32 weight is an fp16 value: true of a model saved in fp16 and loaded in fp32."""
    return weight.dtype == torch.float32 and torch.equal(weight.half().float(), weight)


class Fp16ValuedWeight:
    """An fp32 weight whose values are all fp16 values, kept in fp16 for FBGEMM's matmul together with its fp32
    bias: the op widens the weights to fp32, multiplies and sums in fp32, then adds the bias.

    The product is the fp32 product of the same numbers, in another summation order (float rounding only),
    while half the bytes stream through memory: at decode time, where each step reads every weight for a
    row or two, that is the cost. A row's result does not depend on the other rows (see Fp16RowPlan) nor on
    the thread count (tests/test_decoding.py).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        # The bias inside the op is the same fp32 addition as `out += bias` after it (bit for bit, tested),
        # one op fewer per matmul.
        bias = None if bias is None else bias.detach().float().contiguous()
        self.packed = torch.ops.quantized.linear_prepack_fp16(weight.detach().contiguous(), bias)
        self.rows = fp16_row_plan()
        self._padded: dict[tuple[int, int], torch.Tensor] = {}  # (rows, in) -> padded input, see Fp16RowPlan

    def __call__(self, x: torch.Tensor, tanh_gelu: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
        """x @ weight.T + bias, then either tanh-GELU or + residual (as PackedWeight)."""
        out = self.rows(x, self.packed, self._padded)
        if tanh_gelu:
            out = F.gelu(out, approximate="tanh")
        if residual is not None:
            out += residual
        return out


class PackedWeight:
    """A weight [out, in] pre-packed into oneDNN's blocked layout, for matmuls of 2 or more rows on CPU.

    With the MKL in the pip wheels, addmm of a few rows (8 variations) runs far below the CPU's peak on
    the machine we measured; with oneDNN and pre-packed weights the 8-row decode ran about 1.4x faster
    (benchmarks/bench_decode.py). The result differs only by summation order, i.e. float rounding.
    """

    ROWS_HINT = 8  # measured: the layout oneDNN picks for 8 rows serves 3 to 16 rows as well as their own

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), self.ROWS_HINT)
        self.bias = None if bias is None else bias.detach()

    def __call__(self, x: torch.Tensor, tanh_gelu: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
        """x @ weight.T + bias, then either tanh-GELU or + residual, fused into the matmul's output pass."""
        bias = self.bias
        if residual is not None:
            if tanh_gelu:
                raise ValueError("oneDNN's fused linear takes an activation or a residual, not both")
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.packed, bias, "add")
        if tanh_gelu:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, bias, "gelu", [], "tanh")
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, bias, "none", [], "")


class WidenedWeight:
    """A bf16 or fp16 weight on a CPU that cannot pack that dtype, multiplied in fp32 (its values widen exactly)
    through an Fp16ValuedWeight or a PackedWeight, the result rounded back to the model's dtype as a native
    bf16 matmul rounds its fp32 sums.

    Without it such a model fell back to kernels chosen by row count (streaming up to 2 rows, addmm beyond) in
    emulated bf16: on an AVX2-only AMD EPYC an expand() took 2.8 s, 8 variations 97 s, and every variation
    differed from its seed alone (docs/benchmarks.md)."""

    def __init__(self, inner, dtype: torch.dtype):
        self.inner, self.dtype = inner, dtype  # inner holds the widened weight and bias

    def __call__(self, x: torch.Tensor, tanh_gelu: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
        out = self.inner(x.float(), tanh_gelu=tanh_gelu, residual=None if residual is None else residual.float())
        return out.to(self.dtype)


def _no_decode_cache():
    return None


class FastGPT2:
    """A minimal GPT-2 forward over the live weights of a transformers GPT2LMHeadModel.

    It reads the module's parameters by reference, so a style switch that rewrites the weights in
    place is seen at once. Per step it runs only the matmuls, with a pre-allocated KV cache and none
    of generate()'s per-step bookkeeping.
    """

    SUPPORTED = ("gpt2",)
    # Decode steps on CPU multiply a handful of rows by each weight, so a step costs what reading the
    # weights costs. An fp32 weight that holds only fp16 values (a model saved in fp16, as the default is)
    # goes to FBGEMM's fp16-weight matmul (see Fp16ValuedWeight): on an AMD EPYC a full expand() of the
    # default took 609 ms with oneDNN-packed fp32 weights and 407 ms with these, in one paired run. Others are
    # pre-packed for oneDNN (see PackedWeight) where this torch build can, one row included. Measured for
    # those on the 8x512 default, 1 row, a full expand(): on an Intel Xeon with AMX, packed 474 ms, MKL addmm
    # 394 ms, streamed 798 ms in fp32, and packed 291 against streamed 347 ms in bf16; on an AMD EPYC
    # streaming was the fastest at 1 row and addmm the slowest, and a 2-row packed step cost 1.16x a 1-row
    # streamed one. Where neither is available, streaming wins up to 2 rows, then addmm for the layers and
    # streaming for the head up to 16 rows.
    LAYER_STREAM_ROWS = 2
    HEAD_STREAM_ROWS = 16
    PACKED_ROWS = 1
    LAYER_CHUNKS = 4
    HEAD_CHUNKS = 8

    def __init__(self, model):
        from transformers.activations import ACT2FN

        cfg = model.config
        if getattr(cfg, "model_type", None) not in self.SUPPORTED:
            raise TypeError(f"fast decode supports {self.SUPPORTED}, not {cfg.model_type}")
        if getattr(cfg, "scale_attn_by_inverse_layer_idx", False) or getattr(cfg, "reorder_and_upcast_attn", False):
            raise TypeError("fast decode does not support scale_attn_by_inverse_layer_idx/reorder_and_upcast_attn")
        self.model = model
        t = model.transformer
        self.wte, self.wpe = t.wte.weight, t.wpe.weight
        self.blocks = list(t.h)
        self.ln_f = t.ln_f
        self.head = model.lm_head.weight
        self.n_head = cfg.n_head
        self.n_embd = cfg.n_embd
        self.head_dim = cfg.n_embd // cfg.n_head
        self.n_positions = cfg.n_positions
        self.scale = 1.0 / math.sqrt(self.head_dim) if getattr(cfg, "scale_attn_weights", True) else 1.0
        # gelu_new is tanh-GELU; torch's fused kernel replaces five elementwise ops per block.
        self.tanh_gelu = cfg.activation_function in ("gelu_new", "gelu_pytorch_tanh")
        self.act = (lambda x: F.gelu(x, approximate="tanh")) if self.tanh_gelu else ACT2FN[cfg.activation_function]
        self.eps = cfg.layer_norm_epsilon
        self.kv = None  # per block: keys and values, [2, rows, heads, positions, head_dim]
        self._streamed: dict[int, tuple] = {}  # id(Conv1D) -> (weight signature, StreamedWeight)
        # id(Conv1D) or "head" -> (weight signature, Fp16ValuedWeight or PackedWeight)
        self._packed: dict = {}
        self._use_packed = False  # this decode multiplies enough rows per step to use self._packed
        self._packed_from = self.PACKED_ROWS  # from how many rows a matmul uses self._packed
        self._head: StreamedWeight | None = None
        self._lean: list[tuple] | None = None  # per block, what _lean_layers reads; None: use _block
        self._fp16_matmul = False  # some prepared weight of this decode goes to FBGEMM (see decode_rows)
        self.rows_apart = False  # every matmul of this decode goes to FBGEMM: each row's result is its own
        self.graphs = None  # graphs.DecodeGraphs, once a CUDA decode with graphs on asks
        self._masks: dict[tuple, torch.Tensor] = {}  # see _after_cache_mask
        self._unconditional = None  # (key, caches, logits) of the last unconditional prefill (see unconditional)

    def __reduce__(self):
        # A host may deepcopy or pickle the model this cache hangs on; oneDNN's packed tensors can be
        # neither, and a copy would only double the memory. The copy builds its own cache when it decodes.
        return (_no_decode_cache, ())

    def _linear(self, x, conv, activate=False, residual=None):
        """x @ weight + bias, then the activation when `activate`, then + `residual` when given."""
        rows = x.reshape(-1, x.shape[-1])
        out_shape = x.shape[:-1] + (conv.weight.shape[1],)
        n = rows.shape[0]
        streamed = self._streamed.get(id(conv)) if n <= self.LAYER_STREAM_ROWS else None
        packed = self._prepared(id(conv)) if n >= self._packed_from else None
        if packed is not None:
            fuse_act = activate and self.tanh_gelu
            out = packed(rows, tanh_gelu=fuse_act, residual=None if residual is None else residual.reshape(n, -1))
            activate, residual = activate and not fuse_act, None
        elif streamed is not None:
            out = _stream_matmul(rows, streamed[1]) + conv.bias
        else:
            # transformers' Conv1D stores weight as [in, out]; addmm is what it computes.
            out = torch.addmm(conv.bias, rows, conv.weight)
        if activate:
            out = self.act(out)
        out = out.view(out_shape)
        return out if residual is None else residual + out

    def _prepare_weights(self, rows: int) -> None:
        """Before each decode on CPU: keep fp16-valued fp32 weights in fp16 for FBGEMM (see Fp16ValuedWeight)
        and pre-pack the others for oneDNN (see PackedWeight), where this torch can; a bf16 or fp16 model whose
        dtype this CPU cannot pack gets the same, widened to fp32 (see WidenedWeight); else lay them out for
        streaming (see _stream_matmul).

        Each copy is made again only when its weight changed: a host moving or casting the model gives it
        new storage, a style mixed in place calls weights_changed() (and bumps the version counter, which
        tensors made under inference_mode lack).
        """
        self._lean, self._fp16_matmul, self.rows_apart = None, False, False
        if self.head.device.type != "cpu":
            self._streamed, self._packed, self._head, self._use_packed = {}, {}, None, False
            return
        epoch = getattr(self.model, WEIGHTS_EPOCH, 0)

        def signature(w):
            return () if w is None else weight_signature(w, epoch)

        dtype = self.head.dtype
        packing = packed_linear_available(dtype)
        # A bf16 or fp16 model on a CPU that cannot pack its dtype multiplies in fp32 (see WidenedWeight).
        widen = dtype in (torch.bfloat16, torch.float16) and not packing and packed_linear_available(torch.float32)
        fp16_weights = (dtype == torch.float32 or widen) and fp16_weight_linear_available()
        self._use_packed = rows >= self._packed_from and (fp16_weights or packing or widen)
        # Streamed copies only where some matmul of this decode may need them.
        streaming = not (self._use_packed and self._packed_from <= 1 and (packing or widen))

        def prepared(w, bias):
            wide = w.float() if widen else w
            wide_bias = bias.float() if widen and bias is not None else bias
            if fp16_weights and holds_fp16_values(wide):
                made = Fp16ValuedWeight(wide, wide_bias)
            elif packing or widen:
                made = PackedWeight(wide, wide_bias)
            else:
                return None
            return WidenedWeight(made, dtype) if widen else made
        if not streaming:
            self._streamed = {}
        for block in self.blocks:
            for conv in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
                w, key = conv.weight, signature(conv.weight)
                hit = self._streamed.get(id(conv))
                if streaming and (hit is None or hit[0] != key):
                    self._streamed[id(conv)] = (key, StreamedWeight(w.detach().t().contiguous(), self.LAYER_CHUNKS))
                hit, key = self._packed.get(id(conv)), key + signature(conv.bias)  # the bias goes in the copy
                if self._use_packed and (hit is None or hit[0] != key):
                    self._packed[id(conv)] = (key, prepared(w.detach().t(), conv.bias))
        self._head = StreamedWeight(self.head, self.HEAD_CHUNKS)
        key, hit = signature(self.head), self._packed.get("head")
        if self._use_packed and (hit is None or hit[0] != key):
            self._packed["head"] = (key, prepared(self.head, None))
        if self._use_packed and self._packed_from <= 1 and self.tanh_gelu:
            self._lean = self._lean_plan()
        kernels = [p.inner if isinstance(p, WidenedWeight) else p for _, p in self._packed.values()]
        self._fp16_matmul = self._use_packed and any(isinstance(k, Fp16ValuedWeight) for k in kernels)
        # A style mixed into the weights leaves them no fp16 values, and those go to oneDNN, whose kernels for
        # different row counts are not known to sum alike.
        self.rows_apart = self._use_packed and bool(kernels) and all(isinstance(k, Fp16ValuedWeight) for k in kernels)

    def decode_rows(self, n: int) -> int:
        """How many rows a decode of n rows computes, once its weights are prepared: n, or more where they go
        to FBGEMM and its kernel for n rows sums in its own way (see Fp16RowPlan), so that a row gets the same
        bits whatever n is."""
        if not self._fp16_matmul:
            return n
        plan = fp16_row_plan()
        return plan.padded[n - 1] if n <= plan.chunk else n

    def _prepared(self, key):
        """The Fp16ValuedWeight or PackedWeight this decode uses for a weight (id(Conv1D) or "head"), or None."""
        hit = self._packed.get(key) if self._use_packed else None
        return None if hit is None else hit[1]

    def _lean_plan(self) -> list[tuple] | None:
        """Per block: its norms, and each matmul's prepared weight (which holds its bias); None if one has none.
        Made again before each decode, once the prepared weights were checked against their sources."""
        plan = []
        for block in self.blocks:
            convs = (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj)
            attn, proj, fc, out = (self._prepared(id(conv)) for conv in convs)
            if attn is None or proj is None or fc is None or out is None:
                return None
            plan.append((block.ln_1.weight, block.ln_1.bias, attn, proj, block.ln_2.weight, block.ln_2.bias, fc, out))
        return plan

    def _block(self, i, block, x, attend):
        """One transformer block; `attend(i, qkv)` stores this step's keys and values and attends over the cache."""
        b, t, _ = x.shape
        h = F.layer_norm(x, (self.n_embd,), block.ln_1.weight, block.ln_1.bias, self.eps)
        qkv = self._linear(h, block.attn.c_attn).view(b, t, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        a = attend(i, qkv).transpose(1, 2).reshape(b, t, self.n_embd)
        x = self._linear(a, block.attn.c_proj, residual=x)
        h = F.layer_norm(x, (self.n_embd,), block.ln_2.weight, block.ln_2.bias, self.eps)
        return self._linear(self._linear(h, block.mlp.c_fc, activate=True), block.mlp.c_proj, residual=x)

    def layers(self, x: torch.Tensor, attend, every_position: bool = False) -> torch.Tensor:
        """Logits of the last position of x [rows, positions, n_embd], the embedded tokens; with every_position,
        of each position of its one row, [positions, vocab]."""
        if self._lean is not None:
            x = self._lean_layers(x, attend)
        else:
            for i, block in enumerate(self.blocks):
                x = self._block(i, block, x, attend)
        x = x.reshape(-1, self.n_embd) if every_position else x[:, -1]
        x = F.layer_norm(x, (self.n_embd,), self.ln_f.weight, self.ln_f.bias, self.eps)
        return self._project(x)

    def _lean_layers(self, x: torch.Tensor, attend) -> torch.Tensor:
        """The blocks as _block computes them when every matmul has a prepared weight, the same operations on
        the same values, without its per-matmul choices and module lookups, which cost a sixth of a 2-row
        step (5.2 against 4.3 ms; docs/benchmarks.md)."""
        b, t, width = x.shape
        rows, shape, eps = x.reshape(b * t, width), (width,), self.eps
        for i, (ln1_w, ln1_b, attn, proj, ln2_w, ln2_b, fc, out) in enumerate(self._lean):
            h = torch.layer_norm(rows, shape, ln1_w, ln1_b, eps)
            qkv = attn(h).view(b, t, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
            a = attend(i, qkv).transpose(1, 2).reshape(b * t, width)
            rows = proj(a, residual=rows)
            h = torch.layer_norm(rows, shape, ln2_w, ln2_b, eps)
            rows = out(fc(h, tanh_gelu=True), residual=rows)
        return rows.view(b, t, width)

    def _after_cache_mask(self, t: int, pos: int, device) -> torch.Tensor | None:
        """The mask for t new positions after a cache of pos: position pos + j sees the cache and the new
        positions up to its own (SDPA's is_causal would align the triangle to the first key, not to the cache's
        end). None where nothing is hidden (one position, or no cache: is_causal). Additive, as SDPA would turn a
        boolean mask at each of the blocks' calls: the same values, made once, and kept (a few hundred small ones
        at most: the cache's length times the positions a check feeds)."""
        if t == 1 or not pos:
            return None
        key = (t, pos, self.wte.dtype, torch.device(device))
        mask = self._masks.get(key)
        if mask is None:
            hidden = torch.arange(pos + t, device=device) > torch.arange(pos, pos + t, device=device)[:, None]
            mask = torch.zeros(t, pos + t, dtype=self.wte.dtype, device=device).masked_fill_(hidden, -math.inf)
            self._masks[key] = mask
        return mask

    def _forward(self, ids: torch.Tensor, pos: int, every_position: bool = False, caches=None) -> torch.Tensor:
        t = ids.shape[1]
        mask = self._after_cache_mask(t, pos, ids.device)
        caches = self.kv if caches is None else caches

        def attend(i, qkv):
            kv = caches[i]
            kv[:, :, :, pos:pos + t] = qkv[1:]  # keys and values in one copy
            return F.scaled_dot_product_attention(qkv[0], kv[0, :, :, :pos + t], kv[1, :, :, :pos + t],
                                                  attn_mask=mask, is_causal=t > 1 and mask is None, scale=self.scale)

        return self.layers(self.wte[ids] + self.wpe[pos:pos + t], attend, every_position)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for every vocabulary entry: x @ head.T, the biggest weight read of each step."""
        head = self._prepared("head")
        if head is not None and x.shape[0] >= self._packed_from:
            return head(x)
        if self._head is None or x.shape[0] > self.HEAD_STREAM_ROWS:
            return x @ self.head.t()
        # Row-contiguous logits: the sampler's mask and top-k run twice as fast on them as on the bmm's layout.
        return _stream_matmul(x, self._head).contiguous()

    def prefill(self, context: torch.Tensor, rows: int, total_len: int) -> torch.Tensor:
        """Run the shared context once, then give each of `rows` rows its own copy of the cache."""
        shape = (2, 1, self.n_head, total_len, self.head_dim)
        dev, dt = self.wte.device, self.wte.dtype
        # Zeros, not torch.empty: step_rows masks a row's unwritten positions, but a masked NaN left in
        # uninitialised memory still turns the attention sum into NaN (0 * NaN).
        self.kv = [torch.zeros(shape, device=dev, dtype=dt) for _ in self.blocks]
        self._prepare_weights(rows)
        logits = self._forward(context, 0)
        if rows > 1:
            self.kv = [kv.expand(-1, rows, -1, -1, -1).contiguous() for kv in self.kv]
            logits = logits.expand(rows, -1)
        return logits

    def _weights_key(self) -> tuple:
        """What a forward's bits follow besides its input: every parameter's signature, and the thread count
        (kernels may split sums by threads)."""
        epoch = getattr(self.model, WEIGHTS_EPOCH, 0)
        return (torch.get_num_threads(), str(self.wte.device),
                *(weight_signature(p, epoch) for p in self.model.parameters()))

    def unconditional(self, ids: list[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The caches [2, 1, heads, len(ids), head_dim] and the last logits of a one-row prefill of `ids`: the
        same as prefill(ids, 1, ...) gives, kept while the weights stay the same. Every call with contrast
        begins with the same unconditional context, whose prefill cost as much as a step (about 4 ms of the
        default's 250 ms expansion on 2 CPU cores)."""
        key = (tuple(ids), self._weights_key())
        if self._unconditional is None or self._unconditional[0] != key:
            logits = self.prefill(torch.tensor([ids], device=self.wte.device), 1, len(ids))
            self._unconditional = (key, self.kv, logits)
            self.kv = None
        return self._unconditional[1], self._unconditional[2]

    def forget_unconditional(self) -> None:
        """Drop the kept unconditional prefill (its memory is on the model's device)."""
        self._unconditional = None

    def step(self, tokens: torch.Tensor, pos: int) -> torch.Tensor:
        return self._forward(tokens.view(-1, 1), pos)

    def check_rows(self, rows: list[tuple[list[torch.Tensor], list[int], int]]) -> list[torch.Tensor]:
        """Several rows' tokens in one step, each (its caches, its tokens, pos): the tokens go at positions pos,
        pos + 1, ... of that row's caches (one row each, [2, 1, heads, positions, head_dim] per block). Returns per
        row the logits after each of its tokens, [len(tokens), vocab].

        Each weight is read once for every position of every row, while each row attends over its own cache
        in an attention call of its own, with the shapes and the mask it would have alone: a row's logits are
        the ones it gets in a step by itself wherever each row's result of a matmul is its own (FBGEMM's, with
        Fp16RowPlan; decode_rests asks for that before it puts rows together)."""
        device = self.wte.device
        if len(rows) == 1:
            caches, tokens, pos = rows[0]
            return [self._forward(torch.tensor([tokens], device=device), pos, every_position=True, caches=caches)]
        spans, start = [], 0
        for caches, tokens, pos in rows:
            spans.append((start, start + len(tokens), pos, caches, self._after_cache_mask(len(tokens), pos, device)))
            start += len(tokens)
        ids = torch.tensor([tok for _, tokens, _ in rows for tok in tokens], device=device)
        positions = torch.tensor([pos + j for _, tokens, pos in rows for j in range(len(tokens))], device=device)

        def attend(i, qkv):
            out = []
            for first, end, pos, caches, mask in spans:
                kv, t = caches[i], end - first
                kv[:, :, :, pos:pos + t] = qkv[1:, :, :, first:end]  # as _forward's attend, on this row's part
                out.append(F.scaled_dot_product_attention(qkv[0, :, :, first:end], kv[0, :, :, :pos + t],
                                                          kv[1, :, :, :pos + t], attn_mask=mask,
                                                          is_causal=t > 1 and mask is None, scale=self.scale))
            return torch.cat(out, dim=2)

        x = (self.wte[ids] + self.wpe[positions]).unsqueeze(0)
        logits = self.layers(x, attend, every_position=True)
        return [logits[first:end] for first, end, *_ in spans]

    def step_rows(self, tokens: torch.Tensor, positions: torch.Tensor, length: int, caches=None) -> torch.Tensor:
        """One step where row r is at positions[r] (all below `length`): rows with different contexts share
        each weight read. Each row writes its keys and values at its own position in `caches` (default
        self.kv) and attends to its own positions only; the positions it has not written must hold finite
        values (prefill zeroes them, and decode_fast's ZeroedAhead). The shapes depend on `length` alone, and no
        value goes back to the host, so a CUDA graph can record it (see graphs.StaticStep)."""
        caches = self.kv if caches is None else caches
        rows = tokens.shape[0]
        row_index = torch.arange(rows, device=positions.device)
        hidden = torch.arange(length, device=positions.device) > positions[:, None]
        # The additive mask SDPA would make of a boolean one at every call, made once for all the blocks.
        mask = torch.zeros((rows, 1, 1, length), device=positions.device, dtype=self.wte.dtype).masked_fill_(
            hidden.view(rows, 1, 1, length), -math.inf)

        def attend(i, qkv):
            kv = caches[i]
            kv[:, row_index, :, positions] = qkv[1:, :, :, 0].transpose(0, 1)
            return F.scaled_dot_product_attention(qkv[0], kv[0, :, :, :length], kv[1, :, :, :length],
                                                  attn_mask=mask, scale=self.scale)

        x = self.wte[tokens] + self.wpe[positions]
        return self.layers(x.unsqueeze(1), attend)


@torch.inference_mode()
def decode_fast(model, context_ids: list[int], rows: RowDecoder, should_stop: Callable[[], None] | None = None,
                unconditional_ids: list[int] | None = None, draft=None, resume: "PausedRow | None" = None):
    """Decode every row; with rows.contrast, the same tokens also follow `unconditional_ids` in a second cache.

    With a draft (draft_tokens.DraftTable), a single row checks the table's guesses of its next tokens in one step
    once it needs no unconditional logits (see decode_guessing). A decode of rows that pause (pause_at_words)
    leaves their caches in rows.paused_rows; `resume` (one of them, with a draft) goes on from it with no prefill,
    context_ids being that row's context and tokens."""
    fast = getattr(model, "_prompt_expander_fast", None)
    if fast is None:
        fast = FastGPT2(model)
        model._prompt_expander_fast = fast
    device = fast.wte.device
    replayed = rows.steps  # a replayed row (RowDecoder.replay) has its first tokens in the context
    left = rows.max_new_tokens - replayed
    total = len(context_ids) + left
    if resume is not None:
        if draft is None:
            raise ValueError("resume goes on with one row, a draft and no contrast")
        decode_rests(model, [(context_ids, rows, resume)], draft, should_stop)
        return rows
    contrast = rows.contrast > 0 and unconditional_ids is not None
    graphs = decode_graphs.graphs_for(fast)
    uncond_logits, uncond_pos, uncond_static = None, 0, None
    # Without graphs, contrast's caches are copied into one batch below: a prefill's single row is enough there.
    prefill_rows = rows.n if graphs is not None or not contrast else 1
    if contrast:
        uncond_total = len(unconditional_ids) + left
        uncond_pos = len(unconditional_ids)
        if graphs is not None:
            uncond_logits = fast.prefill(torch.tensor([unconditional_ids], device=device), prefill_rows,
                                         uncond_total).expand(rows.n, -1)
            uncond_kv = fast.kv
            uncond_static = graphs.step(rows.n, uncond_total, uncond_kv, uncond_pos, slot=1)
        else:  # only its first uncond_pos positions are read, in the merge below
            uncond_kv, uncond_logits = fast.unconditional(unconditional_ids)
            uncond_logits = uncond_logits.expand(rows.n, -1)
    n = rows.n
    logits = fast.prefill(torch.tensor([context_ids], device=device), prefill_rows, total).expand(n, -1)
    # Rows each step computes: more than asked where FBGEMM's kernel for that many rows sums in its own way
    # (see Fp16RowPlan); the extra rows decode a dummy token and are never read.
    asked = 2 * n if contrast else n
    width = asked if graphs is not None else fast.decode_rows(asked)  # graphs record the asked rows (CUDA)
    if width > asked and not contrast:
        fast.kv = [torch.cat([kv, kv[:, :1].expand(-1, width - n, -1, -1, -1)], dim=1) for kv in fast.kv]
    cond_kv = fast.kv
    pos = len(context_ids)
    static = None
    if graphs is not None and (uncond_static is not None or not contrast):
        static = graphs.step(rows.n, total, cond_kv, pos, slot=0)
    if static is not None:  # the static caches hold everything now
        fast.kv = cond_kv = uncond_kv = None
    elif contrast:
        # Both caches in one batch: each step reads the weights once for the rows with and without the input.
        both = [torch.empty((2, width, fast.n_head, max(total, uncond_total), fast.head_dim), device=device,
                            dtype=c.dtype) for c in cond_kv]
        zeroed = ZeroedAhead(both)
        zeroed.reach(max(pos, uncond_pos) + 1)  # before the merge: it zeroes every row's positions up to there
        for merged, c, u in zip(both, cond_kv, uncond_kv):  # c and u: one row each, or the n rows (graphs)
            merged[:, :n, :, :pos] = c[:, :, :, :pos]
            merged[:, n:2 * n, :, :uncond_pos] = u[:, :, :, :uncond_pos]
        fast.kv, cond_kv, uncond_kv = both, None, None
        fast._prepare_weights(width)
        offsets = torch.tensor([0] * n + [uncond_pos - pos] * n + [0] * (width - 2 * n), device=device)
    dummy = torch.zeros(width - asked, dtype=torch.long, device=device)
    input_rows_only = False  # contrast is over: step_rows on the rows with the input alone
    # The logits each row paused on (a graph's outputs are overwritten each step: no going on from those)
    paused_logits = {} if rows.pause_at_words and static is None else None
    while True:
        nxt = rows.choose(logits, uncond_logits)
        if paused_logits is not None:
            for r in range(n):
                if rows.paused[r] and r not in paused_logits:
                    paused_logits[r] = logits[r:r + 1]
        if rows.all_done or pos >= total:
            break
        if should_stop is not None:
            should_stop()
        if contrast and static is None and not rows.wants_unconditional:
            # Every row is past its contrast words. The rows go on in step_rows, as before, so that a row gets
            # the same bits whenever the rows beside it stop (a variation must equal its seed alone).
            contrast, uncond_logits, input_rows_only = False, None, True
            width = fast.decode_rows(n)  # at most the 2n rows' width: Fp16RowPlan's padding never decreases
            # The first rows of the same caches, no copy: the rows past n (those without the input, or padding)
            # decode a dummy token, and a row's result never depends on the values of the others.
            fast.kv = [kv[:, :width] for kv in fast.kv]
            offsets = torch.zeros(width, dtype=torch.long, device=device)
            dummy = torch.zeros(width - n, dtype=torch.long, device=device)
        if draft is not None and n == 1 and static is None and not contrast:
            decode_guessing(fast, [GuessingRow(rows, int(nxt[0]), pos, total, context_ids + rows.tokens[0][replayed:],
                                               [kv[:, :1] for kv in fast.kv])], draft, should_stop)
            break
        if static is not None:
            logits = static.run(nxt, pos)
            if contrast:
                uncond_logits = uncond_static.run(nxt, uncond_pos)
        elif contrast:
            zeroed.reach(max(pos, uncond_pos) + 1)
            out = fast.step_rows(torch.cat([nxt, nxt, dummy]), offsets + pos, max(pos, uncond_pos) + 1)
            logits, uncond_logits = out[:n], out[n:2 * n]
        elif input_rows_only:
            zeroed.reach(pos + 1)
            logits = fast.step_rows(torch.cat([nxt, dummy]), offsets + pos, pos + 1)[:n]
        else:
            logits = fast.step(torch.cat([nxt, dummy]) if len(dummy) else nxt, pos)[:n]
        pos += 1
        uncond_pos += 1
    if paused_logits:  # row r's cache is row r of the caches, with or without contrast
        rows.paused_rows = PausedRows(fast.kv, paused_logits)
    fast.kv = None  # the caches are per decode; a resident model should not keep them
    return rows


class ZeroedAhead:
    """Caches made with torch.empty, zeroed a few positions ahead of the step that first reads them.

    step_rows reads every row's positions below `length`, and a row lagging the others (its context shorter, or a
    padding row) reads some it has not written: those must hold finite values (see step_rows). Each step writes
    below its `length` alone, so positions from the highest length reached on were never written, and zeroing
    them there on every row overwrites nothing. Zeroing all the caches at once cost 5 ms of a 250 ms expansion
    on 2 CPU cores (fresh pages, most of them never read: the beginnings end some 20 steps in)."""

    AHEAD = 8

    def __init__(self, caches: list[torch.Tensor]):
        self.caches, self.reached = caches, 0  # positions below `reached` hold written values or zeros

    def reach(self, length: int) -> None:
        """Make positions below `length` finite on every row, ahead of a step that reads up to there."""
        if length <= self.reached:
            return
        end = min(length + self.AHEAD, self.caches[0].shape[3])
        for kv in self.caches:
            kv[:, :, :, self.reached:end].zero_()
        self.reached = end


class PausedRows:
    """The caches of a decode whose rows paused, and the logits each paused on: a paused row can go on from them
    (decode_fast's resume) rather than from a prefill of its context and tokens, which at 20 tokens cost as
    much as 3 steps. The caches are the decode's own (no copy); drop this once the rows have gone on."""

    def __init__(self, caches: list[torch.Tensor], logits: dict[int, torch.Tensor]):
        self.caches, self.logits = caches, logits

    def row(self, r: int) -> "PausedRow":
        return PausedRow([kv[:, r:r + 1] for kv in self.caches], self.logits[r])


class PausedRow:
    """One row of PausedRows: its cache (views into the decode's) and the logits it paused on."""

    def __init__(self, caches: list[torch.Tensor], logits: torch.Tensor):
        self.caches, self.logits = caches, logits


class GuessingRow:
    """A row decoding on from its own caches with a draft's guesses (see decode_guessing): its one-row decoder,
    its token `nxt` for position `pos`, where it must stop (`total`), and the tokens the draft reads."""

    def __init__(self, rows: RowDecoder, nxt: int, pos: int, total: int, recent: list[int],
                 caches: list[torch.Tensor]):
        self.rows, self.nxt, self.pos, self.total, self.recent, self.caches = rows, nxt, pos, total, recent, caches

    def take(self, logits: torch.Tensor, guess: list[int]) -> bool:
        """Choose from the logits at each fed position in turn while the choice is the guess; False once the
        row is finished."""
        for j in range(len(guess) + 1):
            self.pos += 1
            self.nxt = int(self.rows.choose(logits[j:j + 1])[0])
            if self.rows.all_done or self.pos >= self.total:
                return False
            self.recent.append(self.nxt)
            if j == len(guess) or self.nxt != guess[j]:
                return True
        return True


def decode_guessing(fast: FastGPT2, rows: list[GuessingRow], draft, should_stop) -> None:
    """Decode each row on from its token `nxt` for position `pos`: each step feeds it with the draft's guesses of
    the tokens after it, and the row chooses from the logits at each fed position in turn while its choice is
    the guess (speculative decoding with a table for a draft model, and exact: every token is what the row
    chooses from the model's logits after the tokens before it, with its own draws).

    At one row a step costs what reading the weights costs, and each further position only about a tenth more,
    so each guess taken is most of a step saved. The logits of a position come out of a step of several
    positions, whose sums may round otherwise than a one-position step's; a row's text does not depend on the
    rows decoded beside it (see FastGPT2.check_rows), nor on the rows its beginning was decoded with."""
    live = list(rows)
    while live:
        if should_stop is not None:
            should_stop()
        guesses = []
        for row in live:
            room = min(draft.per_step, row.total - row.pos - 1)
            guesses.append(draft.propose(row.recent, room) if room > 0 else [])
        logits = fast.check_rows([(row.caches, [row.nxt, *guess], row.pos) for row, guess in zip(live, guesses)])
        live = [row for row, guess, out in zip(live, guesses, logits) if row.take(out, guess)]


def _resumed(rows: RowDecoder, context_ids: list[int], resume: "PausedRow") -> GuessingRow | None:
    """A paused row (rows, replayed) going on from its cache: its first choice made, or None if that finished it."""
    if rows.n != 1 or rows.wants_unconditional:
        raise ValueError("resume goes on with one row, a draft and no contrast")
    replayed = rows.steps  # its first tokens are in the context
    total = len(context_ids) + rows.max_new_tokens - replayed
    nxt = int(rows.choose(resume.logits)[0])
    if rows.all_done or len(context_ids) >= total:
        return None
    return GuessingRow(rows, nxt, len(context_ids), total, context_ids + rows.tokens[0][replayed:], resume.caches)


@torch.inference_mode()
def decode_rests(model, rests: list[tuple[list[int], RowDecoder, "PausedRow"]], draft,
                 should_stop: Callable[[], None] | None = None) -> None:
    """Several paused rows (each: its context and tokens, its one-row decoder replayed, its PausedRow) go on from
    their caches with the draft's guesses, in shared steps where a row's result of a matmul is its own (the
    FBGEMM path with Fp16RowPlan, the default model on an x86 CPU), else one after another. Either way each row
    writes what it writes alone: the rests of 8 variations, each its own seed's, share their weight reads."""
    if not rests:
        return
    fast = model._prompt_expander_fast  # the beginnings' decode made it, and the caches
    fast._prepare_weights(len(rests))
    going = [row for row in (_resumed(rows, context_ids, resume) for context_ids, rows, resume in rests)
             if row is not None]
    if fast.rows_apart:
        decode_guessing(fast, going, draft, should_stop)
    else:
        for row in going:
            decode_guessing(fast, [row], draft, should_stop)


@torch.inference_mode()
def decode_reference(model, context_ids: list[int], rows: RowDecoder, should_stop: Callable[[], None] | None = None,
                     unconditional_ids: list[int] | None = None):
    """The same decisions through transformers' generate(): RowDecoder acts as its logits processor.

    With rows.contrast, the unconditional logits come from a plain forward over the unconditional context and
    the tokens chosen so far (no cache: this is the reference, not the fast path)."""
    from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

    class Chooser(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if should_stop is not None:
                should_stop()
            uncond = None
            if rows.contrast > 0 and unconditional_ids is not None:
                chosen = input_ids[:, len(context_ids):]
                prefix = torch.tensor([unconditional_ids] * len(chosen), device=input_ids.device)
                uncond = model(input_ids=torch.cat([prefix, chosen], dim=1)).logits[:, -1]
            choice = rows.choose(scores, uncond)
            out = torch.full_like(scores, -math.inf)
            out.scatter_(1, choice.view(-1, 1), 0.0)
            return out

    class Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return rows.all_done

    device = next(model.parameters()).device
    context = torch.tensor([context_ids] * rows.n, device=device)
    eos = rows.vocab.eos_id
    left = rows.max_new_tokens - rows.steps  # as in decode_fast
    model.generate(context, attention_mask=torch.ones_like(context), do_sample=False, num_beams=1,
                   max_new_tokens=left + 1, logits_processor=LogitsProcessorList([Chooser()]),
                   stopping_criteria=StoppingCriteriaList([Stop()]), pad_token_id=eos, eos_token_id=None)
    return rows


@torch.inference_mode()
def decode_groups(model, contexts: list[list[int]], groups: list[RowDecoder],
                  unconditional_ids: list[int] | None = None) -> list[RowDecoder]:
    """Decode several inputs in shared steps: the rows of groups[g] follow contexts[g], and with contrast the same
    tokens also follow `unconditional_ids`. Each weight is read once a step for every row of every group, which
    is what makes building training data fast (self-distill), on a GPU most of all.

    A group's rows are samples of what decode_fast gives it alone, but not always the same bits: every row
    attends over the longest row's positions (the others masked), and attention kernels round differently by
    length. That is why hosts, whose seeds must reproduce, never take this path.
    """
    fast = getattr(model, "_prompt_expander_fast", None)
    if fast is None:
        fast = model._prompt_expander_fast = FastGPT2(model)
    device = fast.wte.device
    contrast = unconditional_ids is not None and any(g.contrast > 0 for g in groups)
    steps = max(g.max_new_tokens for g in groups)
    n = sum(g.n for g in groups)
    starts = [len(c) for c in contexts] + ([len(unconditional_ids)] if contrast else [])
    length = max(starts) + steps + 1
    asked = 2 * n if contrast else n
    fast._prepare_weights(asked)
    width = fast.decode_rows(asked)  # rows past `asked` decode a dummy token (see Fp16RowPlan)
    caches = [torch.zeros((2, width, fast.n_head, length, fast.head_dim), device=device, dtype=fast.wte.dtype)
              for _ in fast.blocks]

    def prefill(ids: list[int], rows: slice) -> torch.Tensor:
        logits = fast.prefill(torch.tensor([ids], device=device), 1, len(ids))
        for cache, kv in zip(caches, fast.kv):
            cache[:, rows, :, :len(ids)] = kv
        return logits

    logits, row = [], 0
    for ids, g in zip(contexts, groups):
        logits.append(prefill(ids, slice(row, row + g.n)).expand(g.n, -1))
        row += g.n
    logits = torch.cat(logits)
    uncond = prefill(unconditional_ids, slice(n, 2 * n)).expand(n, -1) if contrast else None
    fast.kv = None
    fast._prepare_weights(width)
    positions = [len(ids) for ids, g in zip(contexts, groups) for _ in range(g.n)]
    if contrast:
        positions += [len(unconditional_ids)] * n
    positions = torch.tensor(positions + [0] * (width - asked), device=device)
    dummy = torch.zeros(width - asked, dtype=torch.long, device=device)
    for _ in range(steps + 1):
        chosen, row = [], 0
        for g in groups:
            part = slice(row, row + g.n)
            chosen.append(g.choose(logits[part], None if uncond is None else uncond[part]))
            row += g.n
        if all(g.all_done for g in groups):
            break
        tokens = torch.cat(chosen)
        tokens = torch.cat([tokens, tokens, dummy] if contrast else [tokens, dummy])
        out = fast.step_rows(tokens, positions, int(positions.max()) + 1, caches)
        logits, uncond = (out[:n], out[n:2 * n]) if contrast else (out[:n], None)
        positions = (positions + 1).clamp_(max=length - 1)
    return groups
