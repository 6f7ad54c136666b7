"""SpargeAttn's per-block statistics in one Triton pass: mean token and mean pairwise cosine of each block.

One program loads one block of BS contiguous tokens (the last block holds the remainder) of one sequence,
optionally subtracts a per-sequence mean (SpargeAttn's smoothed keys), and writes the block's mean token and
``||sum_i x_i / ||x_i||||² / n²``, which equals the mean of the block's n × n cosine Gram matrix (upstream
forms the Gram with a dot; the sum of unit vectors gives the same number with D-wide work per token). A zero
token divides by a zero norm and makes its block's similarity NaN, as upstream's does (a NaN block is never
"similar", so it is computed whole). Reads the tokens once; the pool and similarity are fp32.

Limits: D a power of two >= 16; contiguous D. Not yet timed on a GPU.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl


@triton.jit
def _pool_similarity_kernel(x_ptr, mean_ptr, pool_ptr, sim_ptr, S, NB, sxn, sxs,
                            D: tl.constexpr, BS: tl.constexpr, BSP: tl.constexpr, HAS_MEAN: tl.constexpr):
    blk = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    r = tl.arange(0, BSP)
    rows = blk * BS + r
    valid = (r < BS) & (rows < S)
    d = tl.arange(0, D)
    x = tl.load(x_ptr + n * sxn + rows[:, None] * sxs + d[None, :], mask=valid[:, None], other=0.0).to(tl.float32)
    if HAS_MEAN:
        x = tl.where(valid[:, None], x - tl.load(mean_ptr + n * D + d)[None, :], 0.0)
    count = tl.minimum(S - blk * BS, BS).to(tl.float32)
    pool = tl.sum(x, axis=0) / count
    norm = tl.where(valid, tl.sqrt(tl.sum(x * x, axis=1)), 1.0)  # real zero tokens keep their 0/0
    unit = x / norm[:, None]
    total = tl.sum(unit, axis=0)
    tl.store(pool_ptr + (n * NB + blk) * D + d, pool)
    tl.store(sim_ptr + n * NB + blk, tl.sum(total * total, axis=0) / (count * count))


def pool_similarity(x: torch.Tensor, block: int, mean: torch.Tensor | None = None,
                    num_warps: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, S, D), optional mean (N, D) -> block means (N, NB, D) fp32 and mean cosines (N, NB) fp32."""
    if x.dim() != 3:
        raise ValueError(f"x has {x.dim()} dims (shape {tuple(x.shape)}); expected (N, S, D)")
    n, s, d = x.shape
    if d < 16 or d & (d - 1):
        raise ValueError(f"head dim D={d}; the block pooling kernel expects a power of two >= 16")
    if mean is not None and tuple(mean.shape) != (n, d):
        raise ValueError(f"mean has shape {tuple(mean.shape)}; expected {(n, d)}")
    if x.stride(-1) != 1:
        x = x.contiguous()
    nb = math.ceil(s / block)
    pool = torch.empty(n, nb, d, dtype=torch.float32, device=x.device)
    sim = torch.empty(n, nb, dtype=torch.float32, device=x.device)
    mean32 = mean.float().contiguous() if mean is not None else pool
    _pool_similarity_kernel[(nb, n)](x, mean32, pool, sim, s, nb, x.stride(0), x.stride(1), D=d, BS=block,
                                     BSP=triton.next_power_of_2(block), HAS_MEAN=mean is not None,
                                     num_warps=num_warps)
    return pool, sim
