"""XAttention (arXiv 2503.16428): block importance from strided antidiagonal scores, kept up to a cumulative
mass threshold.

Source: mit-han-lab/x-attention @ e379887. ``xattn/src/Xattention.py``: ``xattn_estimate`` (torch path, which
is also what upstream runs on an H200: its Triton estimate is used only on devices whose name contains "100";
``select_mode="inverse"``, ``causal=False``, ``kdb=1``, ``norm=1``, as the HunyuanVideo integration
``eval/HunyuanVideo/hyvideo/modules/attenion.py`` calls it) and ``Xattention_prefill`` (chunk size, block 128
asserted); ``xattn/src/utils.py::find_blocks_chunked`` (non-causal branch). Defaults: threshold 0.9, stride 16
(``eval/HunyuanVideo/hyvideo/config.py`` and ``modules/models.py``); ``scripts/run_hunyuan.sh`` runs
``run_vbench.py --threshold 0.95 --stride 8`` with its default of 5 dense warm-up steps (of 50): the
``hunyuan_720p`` preset. There is no Wan integration upstream.

The rule, per (batch, head), on the S video tokens in their original order (blocks of 128, the last partial):
1. q and k are padded with zero tokens to a multiple of the chunk ``Xattention_prefill`` derives from S
   (P = next power of two >= S; chunk = max(min(max(2048, P), 2**28 // P), 2048)); the zero keys take part
   in the softmax below with score 0, as in upstream's non-causal mode. (S = 4,096: no padding; Wan 14B 720p:
   75,600 -> 75,776; for S < 2,048 the padding dominates, as it does upstream.)
2. With R = S_pad / stride, cell (i, j) of an R × R matrix scores the antidiagonal of a stride × stride cell of
   the token scores, ``sum_m q[i*stride + stride-1-m] · k[j*stride + m] / sqrt(D) / stride``.
3. Softmax over the R columns of each row; reshaped query rows past the real tokens are zeroed; block mass =
   the sum over the (128/stride)² cells of each (query block, key block).
4. Per query block, key blocks in descending mass while the mass before them is below threshold × the row
   total (padding blocks included), so the kept mass reaches the threshold; key block 0 is always kept
   (upstream writes the unselected entries of its index list as block 0). Padding blocks are then dropped.

Every step is block-level, so the plan (fixed blocks in the original order) is the upstream mask exactly.
On the embedded model (16 frames of 16 × 16 = 4,096 tokens) that is 32 × 32 blocks of half a frame each, no
padding, and 128 / stride antidiagonal cells per block side.
Differences: upstream casts the softmax to the input dtype (bf16) before the block sums, we sum in fp32;
its ``torch.sort`` is unstable, ours stable (ties only). On HunyuanVideo upstream scores video and real text
tokens together; here only video tokens are planned and the prompt stays dense (svg2/methods/joint.py).

Cost at Wan 14B 720p (40 heads × 75,600 tokens, D 128, S_pad 75,776, 591 query blocks), stride 8: the scoring
is 591·16 = 9,456 reshaped query rows × 9,472 columns × 1,024 MACs per head = 7.3 TFLOP over 40 heads, 6.3 %
of the 117 TFLOP of dense attention (12.9 ms at cuDNN's 570 TFLOP/s is its FLOPs-proportional cost); stride
16 halves it. On CUDA the Triton kernel (svg2/kernels/antidiagonal.py) does it in one pass, adding a 0.9 GB
fp32 intermediate written and read once (~0.4 ms at 4 TB/s); the selection sorts 40 × 591 × 592 masses
(14 M floats). Not yet timed on the H200. The torch path (CPU, or CUDA inputs the kernel does not cover)
chunks the scores by query rows (<= 256 MB per chunk), never holding the R × R matrix.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from svg2.blocks import select_by_mass
from svg2.checks import check_fraction, check_int, kernel_covers
from svg2.methods.base import LayerState, MethodConfig
from svg2.methods.registry import register_method
from svg2.methods.static import StaticMethod, block_sizes, expand_block_map
from svg2.plan import Plan


@dataclass
class XAttentionConfig(MethodConfig):
    budget_fields: ClassVar[tuple[str, ...]] = ("threshold",)

    threshold: float = 0.9   # τ: kept mass per query block reaches it; 0.9 (hyvideo argparse); run_hunyuan.sh 0.95
    stride: int = 16         # antidiagonal stride; 16 (hyvideo argparse, README); run_hunyuan.sh 8
    block_size: int = 128    # query and key block in tokens; 128 (asserted by Xattention_prefill)

    def family(self) -> str:
        return f"stride {self.stride}" + (f" b{self.block_size}" if self.block_size != 128 else "")

    def budget_label(self) -> str:
        return f"τ{self.threshold:g}"


# run_hunyuan.sh -> run_vbench.py: threshold 0.95, stride 8, attn_warmup_steps 5 of 50 (dense before it), no dense
# layer. No other model has an upstream integration.
XATTENTION_PRESETS = {"hunyuan_720p": dict(threshold=0.95, stride=8, dense_steps=0.1, dense_layers=0)}


def padded_length(tokens: int) -> int:
    """Upstream's zero-padded length: the next multiple of the chunk ``Xattention_prefill`` picks from S."""
    p = 1 << (tokens - 1).bit_length()
    chunk = max(min(max(2048, p), 128 * 1024 * 2048 // p), 2048)
    return math.ceil(tokens / chunk) * chunk


def block_mass_torch(q: torch.Tensor, k: torch.Tensor, *, stride: int, block: int, padded: int,
                     chunk_bytes: int = 1 << 28) -> torch.Tensor:
    """Torch path of ``svg2.kernels.antidiagonal.block_mass``: (N, S, D) -> (N, ceil(S/block), padded/block) fp32."""
    n, s, d = q.shape
    r, rb = padded // stride, block // stride
    qb, kb = math.ceil(s / block), padded // block
    qp, kp = (F.pad(t.float(), (0, 0, 0, padded - s)) for t in (q, k))
    q_rows = qp.reshape(n, r, stride, d).flip(2).reshape(n, r, stride * d)  # row i: q[i*stride + stride-1-m], m = 0..
    k_cols = kp.reshape(n, r, stride * d)                                  # column j: k[j*stride + m]
    out = torch.empty(n, qb, kb, dtype=torch.float32, device=q.device)
    valid = math.ceil(s / stride)
    step = max(1, chunk_bytes // (4 * n * r * rb))  # query blocks per chunk
    for b0 in range(0, qb, step):
        b1 = min(qb, b0 + step)
        scores = torch.matmul(q_rows[:, b0 * rb:b1 * rb], k_cols.transpose(1, 2)) / (math.sqrt(d) * stride)
        probs = torch.softmax(scores, dim=-1)
        probs[:, max(0, valid - b0 * rb):] = 0.0  # padded query rows
        out[:, b0:b1] = probs.view(n, b1 - b0, rb, kb, rb).sum((2, 4))
    return out


def block_mass(q: torch.Tensor, k: torch.Tensor, *, stride: int, block: int, padded: int) -> torch.Tensor:
    """Block masses of ``block_mass_torch``; CUDA inputs the Triton kernel covers take one fused pass."""
    if kernel_covers(q) and kernel_covers(k):
        from svg2.kernels.antidiagonal import block_mass as kernel_block_mass

        return kernel_block_mass(q, k, stride=stride, block=block, padded=padded)
    return block_mass_torch(q, k, stride=stride, block=block, padded=padded)


def check_power_of_two(name: str, value, *, at_most: int | None = None) -> None:
    check_int(name, value, minimum=1)
    if value & (value - 1) or (at_most is not None and value > at_most):
        bound = f" <= {at_most}" if at_most is not None else ""
        raise ValueError(f"{name}={value!r}; expected a power of two{bound}")


@register_method
class XAttentionMethod(StaticMethod):
    name = "xattention"
    presets = XATTENTION_PRESETS
    Config = XAttentionConfig
    order = 60
    needs_grid = False  # blocks of the original token order

    def validate_config(self) -> None:
        super().validate_config()
        c = self.config
        check_fraction("threshold", c.threshold)
        # Upstream views chunks (powers of two >= 2048) as whole blocks and blocks as whole strides.
        check_power_of_two("block_size", c.block_size, at_most=2048)
        check_power_of_two("stride", c.stride)
        if c.block_size % c.stride:
            raise ValueError(f"stride={c.stride} does not divide block_size={c.block_size}; expected a divisor")

    def plan(self, q, k, v, layer_state: LayerState, grid, timer) -> Plan:
        b, h, s, d = q.shape
        n, c = b * h, self.config
        padded = padded_length(s)
        # Real block sizes, then zero-sized padding blocks (they take part in the ranking, never in the plan).
        sizes = self.static.get(("sizes", s, str(q.device)), lambda: torch.cat([
            block_sizes(s, c.block_size, q.device),
            torch.zeros(padded // c.block_size - math.ceil(s / c.block_size), dtype=torch.long, device=q.device)]))
        num = math.ceil(s / c.block_size)
        with timer.stage("select"):
            mass = block_mass(q.reshape(n, s, d), k.reshape(n, s, d), stride=c.stride, block=c.block_size,
                              padded=padded)  # (N, QB, KB_pad)
            share = mass / mass.sum(-1, keepdim=True)
            keep = select_by_mass(share, sizes.expand(n, -1), top_p=c.threshold)
            keep[..., 0] = True
            keep = keep[..., :num]
        real = sizes[:num]
        return Plan(expand_block_map(keep.reshape(b, h, num, num), real, real, b, h))
