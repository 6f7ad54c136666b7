"""Variable-block sparse attention forward (Triton) over tokens grouped by cluster.

Query cluster i owns the rows ``[row_start[i], +row_sizes[i])`` and key cluster j the columns
``[col_start[j], +col_sizes[j])`` of the permuted layout. Query cluster i attends exactly the tokens
of its kept key clusters, with an exact online softmax (flash-attention style, exp2, fp32 state).

One program is one query tile (BLOCK_M rows of one cluster; with ``split_m`` a cluster's last tile, if at
most half full, is a BLOCK_M / 2 tile of a second launch). Its key tiles come from the schedule in
``varblock_plan`` and are read in up to two loops sharing one softmax state:
1. *box tiles*: BLOCK_N contiguous rows inside one run of kept key clusters. On Hopper (sm_90+) with
   contiguous q, k and v, boxes and the query tile are loaded by TMA from descriptors made on the device
   (``tl.make_tensor_descriptor``; ``triton.set_allocator`` is set here if nothing else set it); elsewhere,
   with ``tma=False``, by pointer loads. The next box's first row is loaded one box ahead.
2. *gathered tiles* (tilings ``mixed`` and ``gather``): BLOCK_N / chunk chunk-list entries, each up to
   ``chunk`` rows of what the boxes left of a run. The rows' addresses come from one vector load of the
   tile's entries, issued one tile ahead, so Triton's pipeliner prefetches K and V num_stages - 1 tiles
   ahead (NOTES.md).
``warp_specialize`` (tiling ``box``, BLOCK_M 128, at most 2 stages) runs the box loop with TMA producer warps
and two consumer warp groups; q and the output then go only through descriptors (in cluster order: with
``q_order`` the launcher gathers q and scatters the output), which works around Triton 3.6 offsetting
tl.arange rows twice in the second consumer group.

No host synchronisation: the plan is built on the device with shape bounds known on the host, the grid is
the bound ``N · (ceil(S / BLOCK_M) + QC)`` query tiles (surplus programs exit at once; the ``compact`` order
launches them last), so a call can be captured in a CUDA graph. Rows whose kept clusters hold no token get 0.

Optional ``q_order`` / ``k_order`` (N, S) make the kernel read q (and write the output) and k, v
through the token permutation directly, so those permuted copies are never materialised (``k_order``
makes every key tile a gather: no TMA). The method stack uses ``q_order`` and permutes k and v.

Skips: backward pass, dropout, causal masks, D other than a power of two >= 16, S >= 2**23.
Measured on an H200 (bf16, D 128): see svg2/kernels/NOTES.md.
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

from svg2.kernels.varblock_plan import (VarblockConfig, VarblockPlan, config_name, make_plan, parse_config,
                                        run_lengths, tile_work)

__all__ = ["VARBLOCK_CONFIGS", "VarblockConfig", "VarblockPlan", "config_name", "default_config", "make_plan",
           "parse_config", "run_lengths", "tile_work", "varblock_attention"]

# Fixed small tiles for interpreter tests; the GPU default was picked by eval/bench/kernels.py sweeps.
VARBLOCK_CONFIGS = {
    "test": VarblockConfig(16, 16, 4, 1, 4),
    "test_chunk1": VarblockConfig(16, 16, 4, 1, 1),
    "test_chunk16": VarblockConfig(16, 16, 4, 1, 16),
    "test_gather": VarblockConfig(16, 16, 4, 1, 4, tiling="gather"),
    "test_box": VarblockConfig(16, 16, 4, 1, 4, tiling="box", order="longest"),
    "test_pointer_boxes": VarblockConfig(16, 32, 4, 1, 8, tma=False, order="natural"),
    "test_split": VarblockConfig(32, 16, 4, 1, 4, split_m=True),
    "test_ws": VarblockConfig(128, 16, 4, 1, 4, tiling="box", warp_specialize=True),
    "h200": VarblockConfig(128, 128, 8, 3, 8, split_m=True),
}

# (device, dtype, D, config, tma, block_m) -> num_stages that compiled there: configs tuned on the H200 step down elsewhere.
_STAGES_THAT_FIT: dict = {}


def default_config() -> VarblockConfig:
    """The GPU tiles (measured at D 128 on the H200; D 64 uses the same): 128-row query tiles with half tiles,
    mixed key tiling, 128-row boxes, 8-row chunks. Within 1% of the fastest config measured on svg2 plans and
    on positional 128-token blocks alike (the warp-specialised box-only config is 3% faster on the latter)."""
    return VARBLOCK_CONFIGS["h200"]


@triton.jit
def _attend_tile(q, k, v, m_i, l_i, acc, scale_log2, bias, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr):
    """One key tile of the online softmax: (m, l, acc) updated by the BLOCK_N keys k, values v."""
    if IEEE:
        qk = tl.dot(q, tl.trans(k), input_precision="ieee")
    else:
        qk = tl.dot(q, tl.trans(k))
    if HAS_BIAS:
        qk = qk * scale_log2 + bias[None, :]
        m_new = tl.maximum(m_i, tl.max(qk, axis=1))
        p = tl.exp2(qk - m_new[:, None])
    else:  # scale folded into one multiply-add per score
        m_new = tl.maximum(m_i, tl.max(qk, axis=1) * scale_log2)
        p = tl.exp2(qk * scale_log2 - m_new[:, None])
    alpha = tl.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None]
    if IEEE:
        acc = tl.dot(p, v, acc, input_precision="ieee")
    else:
        acc = tl.dot(p.to(v.dtype), v, acc)
    return m_new, l_i, acc


@triton.jit
def _varblock_fwd_kernel(q_ptr, k_ptr, v_ptr, o_ptr, qidx_ptr, kidx_ptr, order_ptr,
                         tile_cluster_ptr, tile_row_ptr, tile_end_ptr, box_cnt_ptr, box_ptr, cum_ptr, ent_ptr,
                         S, QC, KC, T, MAXBOX, MAXCH, scale_log2,
                         sqn, sqs, skn, sks, svn, svs, son, sos,
                         D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
                         Q_GATHER: tl.constexpr, O_SCATTER: tl.constexpr, HAS_KIDX: tl.constexpr,
                         IEEE: tl.constexpr, BOX_LOOP: tl.constexpr, BOX_TAILS: tl.constexpr,
                         CHUNK_LOOP: tl.constexpr, TMA: tl.constexpr, WS: tl.constexpr, ORDERED: tl.constexpr):
    # WS: Triton 3.6 splits the 128 query rows over two consumer warp groups and then offsets row indices made
    # from tl.arange twice, so the warp-specialised kernel touches query rows only through descriptors.
    pid = tl.program_id(0)
    if ORDERED:
        item = tl.load(order_ptr + pid)
    else:
        item = pid
    n = (item // T).to(tl.int64)
    ci = tl.load(tile_cluster_ptr + item)
    if ci >= 0:  # programs past the last query tile of a sequence do nothing
        row0 = tl.load(tile_row_ptr + item)
        row_end = tl.load(tile_end_ptr + item)
        d = tl.arange(0, D)
        if not WS:
            rows = row0 + tl.arange(0, BLOCK_M)
            rmask = rows < row_end
            if O_SCATTER:
                qrow = tl.load(qidx_ptr + n * S + rows, mask=rmask, other=0)
            else:
                qrow = rows
        if TMA and not Q_GATHER:
            # Rows past the cluster (the next cluster's, or zeros past S) are computed and not stored.
            q_desc = tl.make_tensor_descriptor(q_ptr + n * sqn, shape=[S, D], strides=[sqs, 1],
                                               block_shape=[BLOCK_M, D])
            q = q_desc.load([row0, 0])
        else:
            q = tl.load(q_ptr + n * sqn + qrow[:, None] * sqs + d[None, :], mask=rmask[:, None], other=0.0)
        row_id = n * QC + ci
        r = tl.arange(0, BLOCK_N)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        if BOX_LOOP:
            nbox = tl.load(box_cnt_ptr + row_id)
            box_row = box_ptr + row_id * MAXBOX
            if TMA:
                k_desc = tl.make_tensor_descriptor(k_ptr + n * skn, shape=[S, D], strides=[sks, 1],
                                                   block_shape=[BLOCK_N, D])
                v_desc = tl.make_tensor_descriptor(v_ptr + n * svn, shape=[S, D], strides=[svs, 1],
                                                   block_shape=[BLOCK_N, D])
            b_next = tl.load(box_row)
            for i in tl.range(0, nbox, warp_specialize=WS):
                if WS:  # the producer warps load the entry themselves; a loop-carried one breaks the partition
                    b = tl.load(box_row + i)
                else:  # loaded one box ahead, as the chunk entries below
                    b = b_next
                    b_next = tl.load(box_row + i + 1)  # a zero slot after the last box: no mask
                s0 = b >> 8
                if TMA:
                    k = k_desc.load([s0, 0])
                    v = v_desc.load([s0, 0])
                else:
                    krow = tl.minimum(s0 + r, S - 1)  # rows past a box's end are read, then masked
                    if HAS_KIDX:
                        krow = tl.load(kidx_ptr + n * S + krow)
                    k = tl.load(k_ptr + n * skn + krow[:, None] * sks + d[None, :])
                    v = tl.load(v_ptr + n * svn + krow[:, None] * svs + d[None, :])
                if BOX_TAILS:  # a run's last box may hold fewer than BLOCK_N rows
                    bias = tl.where(r < (b & 255), 0.0, float("-inf"))
                    m_i, l_i, acc = _attend_tile(q, k, v, m_i, l_i, acc, scale_log2, bias, True, IEEE)
                else:
                    m_i, l_i, acc = _attend_tile(q, k, v, m_i, l_i, acc, scale_log2, r, False, IEEE)
        if CHUNK_LOOP:
            chunks = tl.load(cum_ptr + row_id * (KC + 1) + KC)  # entries of this query cluster's chunk list
            ent_row = ent_ptr + row_id * MAXCH
            r_chunk = r // CHUNK
            r_off = r % CHUNK
            # The entries of tile i + 1 are loaded during tile i: the K/V addresses then depend on a loop-carried
            # value, not on a load in the same iteration, and Triton's pipeliner prefetches K/V num_stages - 1
            # tiles ahead (with the load in the iteration it stops at one).
            e_next = tl.load(ent_row + r_chunk)
            for c0 in range(0, chunks, BLOCK_N // CHUNK):
                e = e_next
                e_next = tl.load(ent_row + c0 + BLOCK_N // CHUNK + r_chunk)  # zero-padded: no mask
                bias = tl.where(r_off < (e & 63), 0.0, float("-inf"))  # rows past a chunk's end
                kpos = tl.minimum((e >> 6) + r_off, S - 1)  # rows past a chunk's end are read, then masked
                if HAS_KIDX:
                    krow = tl.load(kidx_ptr + n * S + kpos)
                else:
                    krow = kpos
                k = tl.load(k_ptr + n * skn + krow[:, None] * sks + d[None, :])
                v = tl.load(v_ptr + n * svn + krow[:, None] * svs + d[None, :])
                # The first entry of every tile is a real chunk, so m_new is finite from the first tile on.
                m_i, l_i, acc = _attend_tile(q, k, v, m_i, l_i, acc, scale_log2, bias, True, IEEE)
        out = tl.where(l_i[:, None] > 0, acc / tl.maximum(l_i, 1e-30)[:, None], 0.0)
        if WS:  # the descriptor ends at the cluster's last row, so the next cluster's rows are not written
            o_desc = tl.make_tensor_descriptor(o_ptr + n * son, shape=[row_end, D], strides=[sos, 1],
                                               block_shape=[BLOCK_M, D])
            o_desc.store([row0, 0], out.to(o_ptr.dtype.element_ty))
        else:
            tl.store(o_ptr + n * son + qrow[:, None] * sos + d[None, :], out.to(o_ptr.dtype.element_ty),
                     mask=rmask[:, None])


def _plan_fields(c: VarblockConfig) -> tuple:
    return c.block_m, c.block_n, c.chunk, c.tiling, c.order, c.split_m


def _launch(grid, args, consts, key, num_stages: int) -> None:
    stages = _STAGES_THAT_FIT.get(key, num_stages)
    while True:
        try:
            _varblock_fwd_kernel[grid](*args, **consts, num_stages=stages)
            break
        except OutOfResources:
            # GPUs with less shared memory than the H200 (e.g. 100 KB per block): fewer K/V buffers.
            if stages <= 1:
                raise
            stages -= 1
    _STAGES_THAT_FIT[key] = stages


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _uses_tma(cfg: VarblockConfig, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_order) -> bool:
    """Box tiles (and q) through TMA descriptors: Hopper or later (or the interpreter), rows contiguous in D."""
    if not (cfg.tma and cfg.tiling != "gather" and k_order is None):
        return False
    if not (_interpreted() or (k.is_cuda and torch.cuda.get_device_capability(k.device)[0] >= 9)):
        return False
    return all(t.stride(-1) == 1 and (t.stride(-2) * t.element_size()) % 16 == 0 for t in (q, k, v))


def _ensure_allocator(device: torch.device) -> None:
    """On-device descriptors need a global scratch buffer at launch; torch provides it (graph-capturable)."""
    from triton.runtime import _allocation

    if isinstance(_allocation._allocator.get(), _allocation.NullAllocator):
        triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device=device))


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
    cfg = config or default_config()
    if cfg.block_m < 16 or cfg.block_n < 16 or (cfg.split_m and cfg.block_m < 32):
        raise ValueError(f"block_m={cfg.block_m}, block_n={cfg.block_n}, split_m={cfg.split_m}; the kernel's dots "
                         "need query and key tiles of >= 16 rows")
    if plan is None:
        plan = make_plan(keep, row_sizes, col_sizes, s, cfg)
    elif _plan_fields(plan.config) != _plan_fields(cfg):
        raise ValueError(f"plan was made for {plan.config}; the call has config {cfg}")
    if out is None:
        out = torch.empty(n, s, d, dtype=q.dtype, device=q.device)
    elif out.shape != q.shape or out.dtype != q.dtype or not out.is_contiguous():
        raise ValueError(f"out is {tuple(out.shape)} {out.dtype}; expected a contiguous {tuple(q.shape)} {q.dtype} tensor")
    tma = _uses_tma(cfg, q, k, v, k_order)
    if tma and not _interpreted():
        _ensure_allocator(q.device)
    ws = cfg.warp_specialize and tma
    q_in, out_k, scatter = q, out, None
    if ws and q_order is not None:
        # The warp-specialised kernel reads q and writes the output through descriptors, in cluster order: q is
        # gathered first and the output scattered after (two row gathers).
        from svg2.kernels.permute import gather_rows

        q_in, out_k = gather_rows(q, q_order), torch.empty_like(out)
        scatter = torch.empty_like(q_order).scatter_(1, q_order, torch.arange(s, device=q.device).expand(n, s))
    through_order = q_order is not None and not ws
    dummy = plan.tiles.row  # pointer for unused arguments
    common = dict(D=d, BLOCK_N=cfg.block_n, CHUNK=cfg.chunk, Q_GATHER=through_order, O_SCATTER=through_order,
                  HAS_KIDX=k_order is not None, IEEE=q.dtype == torch.float32, BOX_LOOP=cfg.tiling != "gather",
                  BOX_TAILS=cfg.tiling == "box", CHUNK_LOOP=cfg.tiling != "box", TMA=tma)
    for tiles, warps, part_ws in ((plan.tiles, cfg.num_warps, ws), (plan.half_tiles, 4, False)):
        if tiles is None:
            continue
        num_tiles = tiles.cluster.shape[1]
        args = (q_in, k, v, out_k, q_order.contiguous() if through_order else dummy,
                k_order.contiguous() if k_order is not None else dummy,
                tiles.order if tiles.order is not None else dummy,
                tiles.cluster, tiles.row, tiles.end, plan.box_count, plan.boxes, plan.cum, plan.entries,
                s, qc, kc, num_tiles, plan.boxes.shape[-1], plan.entries.shape[-1], math.log2(math.e) / math.sqrt(d),
                q_in.stride(0), q_in.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                out_k.stride(0), out_k.stride(1))
        consts = dict(common, BLOCK_M=tiles.block_m, WS=part_ws, ORDERED=tiles.order is not None, num_warps=warps)
        _launch((n * num_tiles,), args, consts, (q.device, q.dtype, d, cfg, tma, tiles.block_m), cfg.num_stages)
    if scatter is not None:
        from svg2.kernels.permute import gather_rows

        gather_rows(out_k, scatter, out=out)
    return out.reshape(shape)
