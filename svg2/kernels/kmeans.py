"""Triton k-means kernels: nearest-centroid assignment and centroid update over (N, S, D) sequences.

- ``assign_nearest``: one program per (sequence, tile of BLOCK_S tokens) keeps its token tile on chip
  and streams the centroids in tiles of BLOCK_K, keeping a running (min distance, argmin). The
  distance is ``||c||^2 - 2 x.c`` (||x||^2 does not move the argmin); the S×K matrix is never formed.
  The dot runs in the dtype of ``x`` (bf16/fp16 tensor cores, fp32 accumulate; ieee fp32 for fp32
  inputs), ||c||^2 in fp32, so near-ties may resolve differently from the fp32 torch path.
- ``move_costs``: the same pass for tile alignment (``svg2.align``): per token, the nearest cluster among the
  open ones, and the distance gained or lost by moving there from its own.
- ``cluster_means``: tokens are sorted by label (torch sort, no host sync); one program per
  (sequence, cluster) sums the rows of its run in fp32 and writes the mean, or the previous centroid
  for an empty cluster. Deterministic (no atomics).

Limits: D a power of two >= 16; x contiguous in D. Measured on an H200 (see svg2/kernels/NOTES.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl


@dataclass(frozen=True)
class AssignConfig:
    block_s: int = 128
    block_k: int = 128
    num_warps: int = 8
    num_stages: int = 3


# Fixed small tiles for interpreter tests; the GPU default was picked by eval/bench/kernels.py sweeps (NOTES.md).
ASSIGN_CONFIGS = {"test": AssignConfig(16, 16, 4, 1), "h200": AssignConfig(256, 64, 8, 3)}


@triton.jit
def _nearest_kernel(x_ptr, c_ptr, csq_ptr, out_ptr, open_ptr, lab_ptr, cost_ptr, S, K,
                    sxn, sxs, scn, sck,
                    D: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_K: tl.constexpr, IEEE: tl.constexpr,
                    MOVE: tl.constexpr):
    # Nearest centroid of each token (out). MOVE: nearest among the open clusters only, and the cost of moving
    # there, d(x, nearest open) - d(x, own), with the own distance from the own centroid's row gathered once.
    pid_s = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    rows = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    d = tl.arange(0, D)
    x = tl.load(x_ptr + n * sxn + rows[:, None] * sxs + d[None, :], mask=rows[:, None] < S, other=0.0)
    best = tl.full([BLOCK_S], float("inf"), tl.float32)
    best_idx = tl.zeros([BLOCK_S], tl.int32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        c = tl.load(c_ptr + n * scn + ks[:, None] * sck + d[None, :], mask=ks[:, None] < K, other=0.0)
        csq = tl.load(csq_ptr + n * K + ks, mask=ks < K, other=float("inf"))
        if IEEE:
            dot = tl.dot(x, tl.trans(c), input_precision="ieee")
        else:
            dot = tl.dot(x, tl.trans(c))
        dist = csq[None, :] - 2.0 * dot  # (BLOCK_S, BLOCK_K) fp32
        if MOVE:
            is_open = tl.load(open_ptr + n * K + ks, mask=ks < K, other=0) != 0
            dist = tl.where(is_open[None, :], dist, float("inf"))
        tile_min, tile_arg = tl.min(dist, axis=1, return_indices=True, return_indices_tie_break_left=True)
        tile_arg = tile_arg.to(tl.int32) + k0  # one reduction for the value and its index
        better = tile_min < best  # strict: ties keep the lower index, as torch argmin does
        best = tl.where(better, tile_min, best)
        best_idx = tl.where(better, tile_arg, best_idx)
    tl.store(out_ptr + n * S + rows, best_idx.to(tl.int64), mask=rows < S)
    if MOVE:
        own_label = tl.load(lab_ptr + n * S + rows, mask=rows < S, other=0)
        c_own = tl.load(c_ptr + n * scn + own_label[:, None] * sck + d[None, :], mask=rows[:, None] < S, other=0.0)
        own = tl.load(csq_ptr + n * K + own_label, mask=rows < S, other=0.0) - 2.0 * tl.sum(
            x.to(tl.float32) * c_own.to(tl.float32), axis=1)
        tl.store(cost_ptr + n * S + rows, best - own, mask=rows < S)


@triton.jit
def _cluster_mean_kernel(x_ptr, order_ptr, start_ptr, count_ptr, prev_ptr, out_ptr, S, K,
                         sxn, sxs,
                         D: tl.constexpr, BLOCK_T: tl.constexpr):
    c = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    d = tl.arange(0, D)
    start = tl.load(start_ptr + n * K + c)
    count = tl.load(count_ptr + n * K + c)
    acc = tl.zeros([BLOCK_T, D], tl.float32)
    for t0 in range(0, count, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        m = t < count
        idx = tl.load(order_ptr + n * S + start + t, mask=m, other=0)
        acc += tl.load(x_ptr + n * sxn + idx[:, None] * sxs + d[None, :], mask=m[:, None], other=0.0).to(tl.float32)
    total = tl.sum(acc, axis=0)
    prev = tl.load(prev_ptr + (n * K + c) * D + d)
    mean = tl.where(count > 0, total / tl.maximum(count, 1).to(tl.float32), prev)
    tl.store(out_ptr + (n * K + c) * D + d, mean)


def _check_points(x: torch.Tensor, centroids: torch.Tensor) -> None:
    if x.dim() != 3 or centroids.dim() != 3:
        raise ValueError(f"x {tuple(x.shape)} / centroids {tuple(centroids.shape)}; expected (N, S, D) and (N, K, D)")
    n, s, d = x.shape
    if centroids.shape[0] != n or centroids.shape[2] != d:
        raise ValueError(f"centroids have shape {tuple(centroids.shape)}; expected ({n}, K, {d})")
    if d < 16 or d & (d - 1):
        raise ValueError(f"head dim D={d}; the Triton k-means kernels expect a power of two >= 16")
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"x has dtype {x.dtype}; expected float16, bfloat16 or float32")
    if x.stride(-1) != 1:
        raise ValueError(f"x has stride {x.stride(-1)} in D; expected 1 (contiguous rows)")


def assign_nearest(x: torch.Tensor, centroids: torch.Tensor, config: AssignConfig | None = None,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """Nearest centroid of every token: x (N, S, D), centroids (N, K, D) -> (N, S) int64."""
    _check_points(x, centroids)
    cfg = config or ASSIGN_CONFIGS["h200"]
    n, s, d = x.shape
    c, csq = _centroid_operands(centroids, x.dtype)
    if out is None:
        out = torch.empty(n, s, dtype=torch.long, device=x.device)
    elif tuple(out.shape) != (n, s) or out.dtype != torch.long or not out.is_contiguous():
        raise ValueError(f"out is {tuple(out.shape)} {out.dtype}; expected a contiguous ({n}, {s}) int64 tensor")
    _launch_nearest(x, c, csq, out, cfg)
    return out


def _centroid_operands(centroids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroids as the dot operand in the tokens' dtype, and their squared norms (N, K) in fp32."""
    c32 = centroids.float()
    return c32.to(dtype).contiguous(), (c32 * c32).sum(-1).contiguous()


def _launch_nearest(x, c, csq, out, cfg: AssignConfig, is_open=None, labels=None, cost=None) -> None:
    n, s, d = x.shape
    move = is_open is not None
    _nearest_kernel[(triton.cdiv(s, cfg.block_s), n)](
        x, c, csq, out, is_open if move else csq, labels if move else out, cost if move else csq, s, c.shape[1],
        x.stride(0), x.stride(1), c.stride(0), c.stride(1), D=d, BLOCK_S=cfg.block_s, BLOCK_K=cfg.block_k,
        IEEE=x.dtype == torch.float32, MOVE=move, num_warps=cfg.num_warps, num_stages=cfg.num_stages)


def move_costs(x: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor, is_open: torch.Tensor,
               config: AssignConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cost of moving each token to its nearest open cluster, and that cluster: x (N, S, D), labels (N, S) int64,
    centroids (N, K, D), is_open (N, K) bool -> (N, S) float32 ``d(x, c_open) - d(x, c_own)`` (squared distances;
    inf where no cluster is open) and (N, S) int64. The dot runs in x's dtype, as in ``assign_nearest``."""
    _check_points(x, centroids)
    cfg = config or ASSIGN_CONFIGS["h200"]
    n, s, _ = x.shape
    c, csq = _centroid_operands(centroids, x.dtype)
    cost = torch.empty(n, s, dtype=torch.float32, device=x.device)
    cand = torch.empty(n, s, dtype=torch.long, device=x.device)
    _launch_nearest(x, c, csq, cand, cfg, is_open.to(torch.int8).contiguous(), labels.contiguous(), cost)
    return cost, cand


def cluster_means(x: torch.Tensor, labels: torch.Tensor, prev: torch.Tensor, order: torch.Tensor,
                  block_t: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Means of the tokens with each label (fp32); empty clusters keep ``prev``. ``order`` (N, S): the tokens
    sorted by label (the caller's sort). Returns (centroids, sizes)."""
    _check_points(x, prev)
    n, s, d = x.shape
    k = prev.shape[1]
    if tuple(labels.shape) != (n, s):
        raise ValueError(f"labels have shape {tuple(labels.shape)}; expected {(n, s)}")
    sizes = torch.zeros(n, k, dtype=torch.long, device=x.device).scatter_add_(1, labels, torch.ones_like(labels))
    starts = torch.cumsum(sizes, 1) - sizes
    prev32 = prev.float().contiguous()
    out = torch.empty_like(prev32)
    _cluster_mean_kernel[(k, n)](x, order, starts, sizes, prev32, out, s, k, x.stride(0), x.stride(1),
                                 D=d, BLOCK_T=block_t, num_warps=4)
    return out, sizes
