"""Variable-block sparse attention forward (Triton) over tokens grouped by cluster.

Query cluster i owns the rows ``[row_start[i], +row_sizes[i])`` and key cluster j the columns
``[col_start[j], +col_sizes[j])`` of the permuted layout. Query cluster i attends exactly the tokens
of its kept key clusters, with an exact online softmax (flash-attention style, exp2, fp32 state).

Tiles stay full on both sides where they can:
- query tiles are BLOCK_M rows of one cluster (a cluster of r rows takes ceil(r / BLOCK_M) tiles);
- the kept key clusters of row i, in index order, form a virtual sequence of L_i tokens
  (``cum[i, j]`` = kept tokens before cluster j). A key tile is BLOCK_N consecutive virtual positions,
  so it spans as many small clusters as it needs; position v is gathered from
  ``col_start[j] + (v - cum[j])`` where j is its cluster, found by counting the cluster boundaries in a
  window of BLOCK_N compacted kept clusters after the tile's first cluster (one vector load per tile).
  The tile's first cluster comes from a table built by searchsorted (``key_search='table'``, the
  default) or is carried from tile to tile (``'window'``); ``'binary'`` instead runs a fixed-length
  binary search over all KC clusters (ceil(log2(KC + 1)) dependent loads per tile). None has a
  data-dependent loop; the measured order is table > window > binary (NOTES.md).

No host synchronisation: the plan is built with cumsum/searchsorted on the device and the grid is the
upper bound ``ceil(S / BLOCK_M) + QC`` query tiles per sequence; surplus programs exit at once. So a
call can be captured in a CUDA graph. Rows whose kept clusters hold no token get 0.

Optional ``q_order`` / ``k_order`` (N, S) make the kernel read q (and write the output) and k, v
through the token permutation directly, so the permuted copies are never materialised.

Skips: backward pass, dropout, causal masks, D other than a power of two >= 16.
Measured on an H200 (bf16, D 128): see svg2/kernels/NOTES.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl


@dataclass(frozen=True)
class VarblockConfig:
    block_m: int = 128
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 3
    key_search: str = "table"  # how a key position finds its cluster: "table", "window" or "binary" (module doc)


# Fixed small tiles for interpreter tests; the GPU default was picked by eval/bench_attention.py sweeps.
VARBLOCK_CONFIGS = {
    "test": VarblockConfig(16, 16, 4, 1, "table"),
    "test_window": VarblockConfig(16, 16, 4, 1, "window"),
    "test_binary": VarblockConfig(16, 16, 4, 1, "binary"),
    "h200_d128": VarblockConfig(128, 64, 4, 3, "table"),
    "h200_d64": VarblockConfig(128, 64, 4, 3, "table"),
}


def default_config(d: int) -> VarblockConfig:
    return VARBLOCK_CONFIGS["h200_d64" if d <= 64 else "h200_d128"]


@dataclass
class VarblockPlan:
    """Device-side schedule of one call; every tensor is built without host synchronisation."""

    tile_cluster: torch.Tensor  # (N, T) int32 query cluster of each query tile, -1 past the last tile
    tile_row: torch.Tensor      # (N, T) int32 first permuted row of the tile
    tile_end: torch.Tensor      # (N, T) int32 end (exclusive) of the tile's cluster
    cum: torch.Tensor           # (N, QC, KC+1) int32 kept key tokens before each key cluster; [..., KC] = L_i
    col_start: torch.Tensor     # (N, KC) int32 first permuted column of each key cluster ((N, QC, KC) compacted)
    config: "VarblockConfig"
    tile_first: torch.Tensor | None = None  # (N, QC, ceil(S/BLOCK_N)+1) int32 compacted cluster at each key tile start


def make_plan(keep: torch.Tensor, row_sizes: torch.Tensor, col_sizes: torch.Tensor, seq_len: int,
              config: VarblockConfig) -> VarblockPlan:
    """keep (N, QC, KC) bool, row_sizes (N, QC), col_sizes (N, KC) -> the kernel's schedule.

    ``seq_len`` (S) comes from the tensors' shapes, so the tile count is an upper bound known on the
    host: ceil(S / BLOCK_M) + QC (each cluster wastes at most one partial tile).

    ``key_search='binary'``: ``cum`` runs over all KC clusters (unkept ones add 0) and ``col_start`` is
    per cluster. ``'window'``: the kept non-empty clusters of each row are compacted first, so ``cum``
    and ``col_start`` are (N, QC, KC+1) / (N, QC, KC) in compacted order and every compacted cluster
    holds at least one token (a key tile then spans at most BLOCK_N of them). ``'table'``: as
    ``'window'``, plus the compacted cluster holding the first position of every key tile, so the
    kernel's loop carries no state between key tiles.
    """
    key_search, block_m = config.key_search, config.block_m
    if key_search not in ("table", "window", "binary"):
        raise ValueError(f"key_search={key_search!r}; expected 'table', 'window' or 'binary'")
    n, qc, kc = keep.shape
    rs = row_sizes.to(torch.int64)
    cs = col_sizes.to(torch.int32)
    col_start = (torch.cumsum(cs, -1, dtype=torch.int32) - cs).contiguous()
    cum = torch.zeros(n, qc, kc + 1, dtype=torch.int32, device=keep.device)
    if key_search == "binary":
        torch.cumsum(keep.to(torch.int32) * cs[:, None, :], dim=-1, out=cum[..., 1:])
    else:
        kept = keep & (cs > 0)[:, None, :]
        slot = torch.where(kept, torch.cumsum(kept, -1, dtype=torch.int32) - 1, kc).long()  # kc: discarded
        size_c = torch.zeros(n, qc, kc + 1, dtype=torch.int32, device=keep.device)
        size_c.scatter_(-1, slot, cs[:, None, :].expand(n, qc, kc))
        start_c = torch.zeros_like(size_c).scatter_(-1, slot, col_start[:, None, :].expand(n, qc, kc))
        torch.cumsum(size_c[..., :kc], dim=-1, out=cum[..., 1:])
        col_start = start_c[..., :kc].contiguous()
    tile_first = None
    if key_search == "table":
        starts = torch.arange(0, seq_len + config.block_n, config.block_n, device=keep.device, dtype=torch.int32)
        tile_first = (torch.searchsorted(cum, starts.expand(n, qc, starts.numel()).contiguous(), right=True,
                                         out_int32=True) - 1).contiguous()
    tiles = (rs + block_m - 1) // block_m               # (N, QC) query tiles of each cluster
    tiles_end = torch.cumsum(tiles, -1)                 # inclusive
    num_tiles = triton.cdiv(seq_len, block_m) + qc
    t = torch.arange(num_tiles, device=keep.device).expand(n, num_tiles).contiguous()
    ci = torch.searchsorted(tiles_end, t, right=True)   # (N, T) in [0, QC]; QC = past the last tile
    cic = ci.clamp_max(qc - 1)
    row_start = torch.cumsum(rs, -1) - rs
    start = row_start.gather(1, cic)
    tile_row = start + (t - (tiles_end - tiles).gather(1, cic)) * block_m
    tile_end = start + rs.gather(1, cic)
    tile_cluster = torch.where(ci < qc, ci, torch.full_like(ci, -1))
    return VarblockPlan(tile_cluster.to(torch.int32).contiguous(), tile_row.to(torch.int32).contiguous(),
                        tile_end.to(torch.int32).contiguous(), cum, col_start, config, tile_first)


@triton.jit
def _varblock_fwd_kernel(q_ptr, k_ptr, v_ptr, o_ptr, qidx_ptr, kidx_ptr,
                         tile_cluster_ptr, tile_row_ptr, tile_end_ptr, cum_ptr, col_start_ptr, first_ptr,
                         S, QC, KC, T, TK, scale_log2,
                         sqn, sqs, skn, sks, svn, svs, son, sos,
                         D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SEARCH_STEPS: tl.constexpr,
                         WINDOW: tl.constexpr, TABLE: tl.constexpr, HAS_QIDX: tl.constexpr, HAS_KIDX: tl.constexpr, IEEE: tl.constexpr):
    t = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    ci = tl.load(tile_cluster_ptr + n * T + t)
    if ci >= 0:  # programs past the last query tile of this sequence do nothing
        row0 = tl.load(tile_row_ptr + n * T + t)
        row_end = tl.load(tile_end_ptr + n * T + t)
        rows = row0 + tl.arange(0, BLOCK_M)
        rmask = rows < row_end
        d = tl.arange(0, D)
        if HAS_QIDX:
            qrow = tl.load(qidx_ptr + n * S + rows, mask=rmask, other=0)
        else:
            qrow = rows
        q = tl.load(q_ptr + n * sqn + qrow[:, None] * sqs + d[None, :], mask=rmask[:, None], other=0.0)
        cum_row = cum_ptr + (n * QC + ci) * (KC + 1)
        total = tl.load(cum_row + KC)  # L_i: kept key tokens of this query cluster
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        if WINDOW:
            start_row = col_start_ptr + (n * QC + ci) * KC
        else:
            start_row = col_start_ptr + n * KC
        c0 = ci * 0  # window search: compacted cluster holding the tile's first position
        for v0 in range(0, total, BLOCK_N):
            vs = v0 + tl.arange(0, BLOCK_N)
            vmask = vs < total
            if TABLE:
                c0 = tl.load(first_ptr + (n * QC + ci) * TK + v0 // BLOCK_N)
            if WINDOW:
                # Compacted clusters are non-empty, so the BLOCK_N positions of a tile cross at most
                # BLOCK_N cluster boundaries after c0: count the boundaries at or before each position.
                w = c0 + 1 + tl.arange(0, BLOCK_N)
                bounds = tl.load(cum_row + w, mask=w <= KC, other=2147483647)
                j = c0 + tl.sum((bounds[None, :] <= vs[:, None]).to(tl.int32), axis=1)
                if not TABLE:
                    c0 = c0 + tl.sum((bounds <= v0 + BLOCK_N).to(tl.int32), axis=0)
            else:
                # Largest j in [0, KC] with cum[j] <= v: the key cluster holding virtual position v.
                lo = tl.zeros([BLOCK_N], tl.int32)
                hi = tl.full([BLOCK_N], 1, tl.int32) + KC
                for _ in tl.static_range(SEARCH_STEPS):
                    mid = (lo + hi) >> 1
                    go = tl.load(cum_row + mid) <= vs
                    lo = tl.where(go, mid, lo)
                    hi = tl.where(go, hi, mid)
                j = lo
            j = tl.minimum(j, KC - 1)
            kpos = tl.load(start_row + j, mask=vmask, other=0) + (vs - tl.load(cum_row + j, mask=vmask, other=0))
            kpos = tl.where(vmask, kpos, 0)
            if HAS_KIDX:
                krow = tl.load(kidx_ptr + n * S + kpos, mask=vmask, other=0)
            else:
                krow = kpos
            k = tl.load(k_ptr + n * skn + krow[:, None] * sks + d[None, :], mask=vmask[:, None], other=0.0)
            if IEEE:
                qk = tl.dot(q, tl.trans(k), input_precision="ieee") * scale_log2
            else:
                qk = tl.dot(q, tl.trans(k)) * scale_log2
            qk = tl.where(vmask[None, :], qk, float("-inf"))
            # The first position of every tile is valid, so m_new is finite from the first tile on.
            m_new = tl.maximum(m_i, tl.max(qk, axis=1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(qk - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            vt = tl.load(v_ptr + n * svn + krow[:, None] * svs + d[None, :], mask=vmask[:, None], other=0.0)
            acc = acc * alpha[:, None]
            if IEEE:
                acc = tl.dot(p, vt, acc, input_precision="ieee")
            else:
                acc = tl.dot(p.to(vt.dtype), vt, acc)
            m_i = m_new
        out = tl.where(l_i[:, None] > 0, acc / tl.maximum(l_i, 1e-30)[:, None], 0.0)
        tl.store(o_ptr + n * son + qrow[:, None] * sos + d[None, :], out.to(o_ptr.dtype.element_ty),
                 mask=rmask[:, None])


def varblock_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor,
                       row_sizes: torch.Tensor, col_sizes: torch.Tensor, *,
                       q_order: torch.Tensor | None = None, k_order: torch.Tensor | None = None,
                       config: VarblockConfig | None = None, plan: VarblockPlan | None = None,
                       out: torch.Tensor | None = None) -> torch.Tensor:
    """Variable-block sparse attention on (N, S, D) tensors (or (B, H, S, D), flattened).

    Without orders, q, k, v are already in cluster order and the output is too. With ``q_order``
    (N, S) (permuted position p holds original token q_order[p]) q is read and the output written in
    the original order; with ``k_order`` k and v are read in the original order.
    keep (N, QC, KC) bool; row_sizes (N, QC) and col_sizes (N, KC) must each sum to S per sequence
    (not checked: that would synchronise). ``out`` (N, S, D), if given, receives the result.
    """
    shape = q.shape
    if q.dim() == 4:
        q, k, v = (t.reshape(-1, *t.shape[-2:]) for t in (q, k, v))
    if q.dim() != 3 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"q, k, v shapes {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}; "
                         "expected one (N, S, D) or (B, H, S, D) shape")
    n, s, d = q.shape
    if d < 16 or d & (d - 1):
        raise ValueError(f"head dim D={d}; the Triton sparse kernel expects a power of two >= 16")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32) or k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"q, k, v dtypes {q.dtype}, {k.dtype}, {v.dtype}; expected one of float16, bfloat16, float32")
    keep = keep.reshape(-1, *keep.shape[-2:])
    row_sizes = row_sizes.reshape(-1, row_sizes.shape[-1])
    col_sizes = col_sizes.reshape(-1, col_sizes.shape[-1])
    qc, kc = keep.shape[-2:]
    if keep.shape[0] != n or tuple(row_sizes.shape) != (n, qc) or tuple(col_sizes.shape) != (n, kc):
        raise ValueError(f"keep {tuple(keep.shape)}, row_sizes {tuple(row_sizes.shape)}, col_sizes "
                         f"{tuple(col_sizes.shape)}; expected ({n}, QC, KC), ({n}, QC), ({n}, KC)")
    for name, order in (("q_order", q_order), ("k_order", k_order)):
        if order is not None and tuple(order.shape) != (n, s):
            raise ValueError(f"{name} has shape {tuple(order.shape)}; expected {(n, s)}")
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    cfg = config or default_config(d)
    if plan is None:
        plan = make_plan(keep, row_sizes, col_sizes, s, cfg)
    elif plan.config != cfg:
        raise ValueError(f"plan was made for {plan.config}; the call has config {cfg}")
    num_tiles = plan.tile_cluster.shape[1]
    if out is None:
        out = torch.empty(n, s, d, dtype=q.dtype, device=q.device)
    elif out.shape != q.shape or out.dtype != q.dtype or not out.is_contiguous():
        raise ValueError(f"out is {tuple(out.shape)} {out.dtype}; expected a contiguous {tuple(q.shape)} {q.dtype} tensor")
    qidx = q_order.contiguous() if q_order is not None else plan.tile_row  # dummy pointer when unused
    kidx = k_order.contiguous() if k_order is not None else plan.tile_row
    _varblock_fwd_kernel[(num_tiles, n)](
        q, k, v, out, qidx, kidx, plan.tile_cluster, plan.tile_row, plan.tile_end, plan.cum, plan.col_start,
        plan.tile_first if plan.tile_first is not None else plan.tile_row,
        s, qc, kc, num_tiles, plan.tile_first.shape[-1] if plan.tile_first is not None else 0,
        math.log2(math.e) / math.sqrt(d),
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        D=d, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, SEARCH_STEPS=int(kc).bit_length(),
        WINDOW=cfg.key_search != "binary", TABLE=cfg.key_search == "table", HAS_QIDX=q_order is not None, HAS_KIDX=k_order is not None,
        IEEE=q.dtype == torch.float32,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return out.reshape(shape)
