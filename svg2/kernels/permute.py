"""Triton row gather for the token permutation: y[n, p] = x[n, index[n, p]] on (N, S, D).

One program copies BLOCK rows of one sequence; each row is a contiguous D-vector, so loads and stores
are full-width even though the rows come from scattered positions. It serves both directions: the
permutation (index = order) and its inverse (index = inverse). Any D (masked to the next power of two).
The sparse attention kernel can also read through the order itself (``varblock_attention(q_order=...)``),
which skips materialising the permuted copies.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _gather_rows_kernel(x_ptr, idx_ptr, y_ptr, S, D, sxn, sxs, syn, sys, sin,
                        BLOCK: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    rows = pid * BLOCK + tl.arange(0, BLOCK)
    d = tl.arange(0, BLOCK_D)
    rmask = rows < S
    mask = rmask[:, None] & (d[None, :] < D)
    src = tl.load(idx_ptr + n * sin + rows, mask=rmask, other=0)
    vals = tl.load(x_ptr + n * sxn + src[:, None] * sxs + d[None, :], mask=mask)
    tl.store(y_ptr + n * syn + rows[:, None] * sys + d[None, :], vals, mask=mask)


def gather_rows(x: torch.Tensor, index: torch.Tensor, block: int | None = None,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """x (N, S, D), index (N, S) int -> (N, S, D) with row p of sequence n taken from row index[n, p]."""
    if x.dim() != 3:
        raise ValueError(f"x has {x.dim()} dims (shape {tuple(x.shape)}); expected (N, S, D)")
    n, s, d = x.shape
    if tuple(index.shape) != (n, s):
        raise ValueError(f"index has shape {tuple(index.shape)}; expected {(n, s)}")
    if x.stride(-1) != 1:
        x = x.contiguous()
    if index.stride(-1) != 1:
        index = index.contiguous()
    if out is None:
        out = torch.empty(n, s, d, dtype=x.dtype, device=x.device)
    elif out.shape != x.shape or out.dtype != x.dtype or out.stride(-1) != 1:
        raise ValueError(f"out is {tuple(out.shape)} {out.dtype}; expected {tuple(x.shape)} {x.dtype} with stride 1 in D")
    y = out
    block_d = triton.next_power_of_2(d)
    block = block or max(1, min(64, 8192 // block_d))
    grid = (triton.cdiv(s, block), n)
    _gather_rows_kernel[grid](x, index, y, s, d, x.stride(0), x.stride(1), y.stride(0), y.stride(1),
                              index.stride(0), BLOCK=block, BLOCK_D=block_d, num_warps=4)
    return y
