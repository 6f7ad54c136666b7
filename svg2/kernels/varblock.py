"""Variable-block sparse attention forward (Triton) over tokens grouped by cluster.

Query cluster i owns the rows ``[row_start[i], +row_sizes[i])`` and key cluster j the columns
``[col_start[j], +col_sizes[j])`` of the permuted layout. Query cluster i attends exactly the tokens
of its kept key clusters, with an exact online softmax (flash-attention style, exp2, fp32 state).

Tiles stay full on both sides where they can:
- query tiles are BLOCK_M rows of one cluster (a cluster of r rows takes ceil(r / BLOCK_M) tiles);
- the kept key clusters of row i, merged into runs where kept clusters are adjacent in the layout, are
  cut into chunks of at most ``chunk`` contiguous rows, listed in layout order (the chunk list, built on the
  device by ``chunk_entries``). A key tile is BLOCK_N / chunk consecutive entries, so it spans as many
  small runs as it needs and a run wastes at most chunk - 1 padded rows, not a whole tile. (The svg2 method
  lays key clusters out so that those one query cluster keeps tend to be adjacent: fewer, longer runs.)
  The tile's row addresses come from one vector load of its entries, issued one tile ahead, so Triton's
  pipeliner can prefetch K and V num_stages - 1 tiles ahead; with any load in the address chain inside the
  iteration it stops at one tile (NOTES.md).

No host synchronisation: the plan is built with cumsum and a fill kernel on the device, the chunk list
has the shape bound S / chunk + KC entries per query cluster, and the grid is the upper bound
``ceil(S / BLOCK_M) + QC`` query tiles per sequence; surplus programs exit at once. So a call can be
captured in a CUDA graph. Rows whose kept clusters hold no token get 0.

Optional ``q_order`` / ``k_order`` (N, S) make the kernel read q (and write the output) and k, v
through the token permutation directly, so those permuted copies are never materialised. The method
stack uses ``q_order`` (one gather per query tile) and permutes k and v (read every key tile).

Skips: backward pass, dropout, causal masks, D other than a power of two >= 16, S >= 2**25.
Measured on an H200 (bf16, D 128): see svg2/kernels/NOTES.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources


@dataclass(frozen=True)
class VarblockConfig:
    block_m: int = 64
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 3
    chunk: int = 16  # key rows per chunk-list entry (a power of two, 1..32, dividing block_n)

    def __post_init__(self):
        c = self.chunk
        if c < 1 or c > 32 or c & (c - 1) or self.block_n % c:
            raise ValueError(f"chunk={c}; expected a power of two in 1..32 that divides block_n={self.block_n}")


# Fixed small tiles for interpreter tests; the GPU default was picked by eval/bench_attention.py sweeps.
VARBLOCK_CONFIGS = {
    "test": VarblockConfig(16, 16, 4, 1, 4),
    "test_chunk1": VarblockConfig(16, 16, 4, 1, 1),
    "test_chunk16": VarblockConfig(16, 16, 4, 1, 16),
    "h200": VarblockConfig(64, 64, 4, 3, 16),
}


# (device, dtype, D, config) -> num_stages that compiled there: configs tuned on the H200 step down elsewhere.
_STAGES_THAT_FIT: dict = {}


def parse_config(spec: str) -> VarblockConfig:
    """'M64 N64 w4 s3 c16' (any subset; the rest from VarblockConfig's defaults) -> VarblockConfig."""
    keys = dict(M="block_m", N="block_n", w="num_warps", s="num_stages", c="chunk")
    fields = {}
    for tok in spec.split():
        if tok[:1] not in keys or not tok[1:].isdigit():
            raise ValueError(f"kernel config {spec!r}: unknown token {tok!r}; expected e.g. 'M64 N64 w4 s3 c16'")
        fields[keys[tok[0]]] = int(tok[1:])
    return VarblockConfig(**fields)


def default_config(d: int) -> VarblockConfig:
    """The GPU tiles (measured at D 128 on the H200; D 64 uses the same)."""
    return VARBLOCK_CONFIGS["h200"]


@dataclass
class VarblockPlan:
    """Device-side schedule of one call; every tensor is built without host synchronisation."""

    tile_cluster: torch.Tensor  # (N, T) int32 query cluster of each query tile, -1 past the last tile
    tile_row: torch.Tensor      # (N, T) int32 first permuted row of the tile
    tile_end: torch.Tensor      # (N, T) int32 end (exclusive) of the tile's cluster
    cum: torch.Tensor           # (N, QC, KC+1) int32 chunk-list entries before each key cluster; [..., KC] = total
    entries: torch.Tensor       # (N, QC, MAXCH) int32 start * 64 + length of each key chunk (chunk_entries)
    config: VarblockConfig


def make_plan(keep: torch.Tensor, row_sizes: torch.Tensor, col_sizes: torch.Tensor, seq_len: int,
              config: VarblockConfig) -> VarblockPlan:
    """keep (N, QC, KC) bool, row_sizes (N, QC), col_sizes (N, KC) -> the kernel's schedule.

    ``seq_len`` (S) comes from the tensors' shapes, so the tile count is an upper bound known on the
    host: ceil(S / BLOCK_M) + QC (each cluster wastes at most one partial tile). The chunk list takes
    4 · N · QC · (S / chunk + KC) bytes (Wan 14B 720p, QC 300, KC 1000: 275 MB, 0.12× the bytes of q, k, v).
    """
    block_m = config.block_m
    n, qc, kc = keep.shape
    rs = row_sizes.to(torch.int64)
    cs = col_sizes.to(torch.int32)
    col_start = (torch.cumsum(cs, -1, dtype=torch.int32) - cs).contiguous()
    # A run of adjacent kept key clusters starting at j contributes ceil(rows / chunk) entries to the row's list.
    runs = run_lengths(keep, cs).to(torch.int32).contiguous()
    cum = torch.zeros(n, qc, kc + 1, dtype=torch.int32, device=keep.device)
    torch.cumsum((runs + config.chunk - 1) // config.chunk, dim=-1, out=cum[..., 1:])
    entries = chunk_entries(cum, col_start, runs, seq_len, config)
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
                        tile_end.to(torch.int32).contiguous(), cum, entries, config)


def run_lengths(keep: torch.Tensor, col_sizes: torch.Tensor) -> torch.Tensor:
    """keep (..., QC, KC) bool, col_sizes (..., KC) -> (..., QC, KC) int64: at a key cluster that starts a run
    of kept clusters adjacent in the layout, the run's rows (the sum of its clusters' sizes); 0 elsewhere.

    Adjacent kept clusters are contiguous columns, so one run is read as one stretch of rows. No host sync.
    """
    kc = keep.shape[-1]
    idx = torch.arange(kc, device=keep.device)
    # First non-kept cluster at or after each j (KC if none): a suffix minimum.
    stop = torch.where(keep, kc, idx).flip(-1).cummin(-1).values.flip(-1)
    edge = torch.cumsum(col_sizes.to(torch.int64), -1)
    edge = torch.cat([torch.zeros_like(edge[..., :1]), edge], -1)  # (..., KC+1) first column of each cluster
    edge = edge[..., None, :].expand(*keep.shape[:-1], kc + 1)
    rows = edge.gather(-1, stop) - edge[..., :kc]
    prev = torch.cat([torch.zeros_like(keep[..., :1]), keep[..., :-1]], -1)
    return torch.where(keep & ~prev, rows, 0)


def tile_work(keep: torch.Tensor, row_sizes: torch.Tensor, col_sizes: torch.Tensor,
              config: VarblockConfig) -> torch.Tensor:
    """Query-key pairs the kernel's tiles cover for a plan, padding included, per leading index: (...,) float64.

    keep (..., QC, KC), row_sizes (..., QC), col_sizes (..., KC). Query cluster i takes ceil(r_i / BLOCK_M)
    tiles of BLOCK_M rows; each run of its kept key clusters (``run_lengths``) becomes ceil(rows / chunk)
    chunk-list entries, read BLOCK_N / chunk entries (BLOCK_N rows) per key tile. Over
    ``BlockMap.kept_pairs`` this is the work the kernel spends on padding (NOTES.md).
    """
    rows = torch.ceil(row_sizes.double() / config.block_m) * config.block_m
    entries = torch.ceil(run_lengths(keep, col_sizes).double() / config.chunk).sum(-1)
    keys = torch.ceil(entries * config.chunk / config.block_n) * config.block_n
    return (rows * keys).sum(-1)


def max_chunks(seq_len: int, num_clusters: int, config: VarblockConfig) -> int:
    """Entries per query cluster in the chunk list: sum_j ceil(size_j / chunk) <= S / chunk + KC, rounded up
    to whole key tiles, plus one tile, so that the kernel may read the tile after a row's last without a check."""
    per_tile = config.block_n // config.chunk
    return (triton.cdiv(triton.cdiv(seq_len, config.chunk) + num_clusters, per_tile) + 1) * per_tile


def chunk_entries(cum: torch.Tensor, col_start: torch.Tensor, runs: torch.Tensor, seq_len: int,
                  config: VarblockConfig) -> torch.Tensor:
    """(N, QC, MAXCH) int32 chunk list: entry m of row i is ``start * 64 + length`` of its m-th key chunk
    (``length`` in 1..chunk rows from permuted column ``start``); entries past the row's last chunk, up to the
    end of the key tile after its last, are 0 (the kernel reads them; later ones are never written).
    ``cum`` (N, QC, KC+1) holds the chunks before each key cluster, ``runs`` (N, QC, KC) the rows of the run
    starting at each key cluster (``run_lengths``), ``col_start`` (N, KC) each cluster's first column."""
    n, qc, kc1 = cum.shape
    if seq_len >= 1 << 25:
        raise ValueError(f"S={seq_len}; the chunk list encodes start * 64 + length in int32, so S < 2**25")
    maxch = max_chunks(seq_len, kc1 - 1, config)
    entries = torch.empty(n, qc, maxch, dtype=torch.int32, device=cum.device)
    block = 256
    _chunk_fill_kernel[(triton.cdiv(maxch, block), n * qc)](
        cum, col_start, runs, entries, qc, kc1 - 1, maxch,
        PER_TILE=config.block_n // config.chunk, CHUNK=config.chunk, BLOCK=block,
        SEARCH_STEPS=int(kc1 - 1).bit_length(), num_warps=4)
    return entries


@triton.jit
def _chunk_fill_kernel(cum_ptr, start_ptr, run_ptr, ent_ptr, QC, KC, MAXCH,
                       PER_TILE: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr, SEARCH_STEPS: tl.constexpr):
    pid = tl.program_id(0)
    row = tl.program_id(1).to(tl.int64)  # n * QC + query cluster
    n = row // QC
    cum_row = cum_ptr + row * (KC + 1)
    total = tl.load(cum_row + KC)
    if pid * BLOCK < (tl.cdiv(total, PER_TILE) + 1) * PER_TILE:  # later slots are never read
        m = pid * BLOCK + tl.arange(0, BLOCK)
        # Largest j in [0, KC] with cum[j] <= m: the run start whose chunks hold slot m (its count is > 0).
        lo = tl.zeros([BLOCK], tl.int32)
        hi = tl.full([BLOCK], 1, tl.int32) + KC
        for _ in tl.static_range(SEARCH_STEPS):
            mid = (lo + hi) >> 1
            go = tl.load(cum_row + mid) <= m
            lo = tl.where(go, mid, lo)
            hi = tl.where(go, hi, mid)
        j = tl.minimum(lo, KC - 1)
        off = (m - tl.load(cum_row + j)) * CHUNK
        length = tl.minimum(tl.load(run_ptr + row * KC + j) - off, CHUNK)
        entry = (tl.load(start_ptr + n * KC + j) + off) * 64 + length
        tl.store(ent_ptr + row * MAXCH + m, tl.where(m < total, entry, 0), mask=m < MAXCH)


@triton.jit
def _varblock_fwd_kernel(q_ptr, k_ptr, v_ptr, o_ptr, qidx_ptr, kidx_ptr,
                         tile_cluster_ptr, tile_row_ptr, tile_end_ptr, cum_ptr, ent_ptr,
                         S, QC, KC, T, MAXCH, scale_log2,
                         sqn, sqs, skn, sks, svn, svs, son, sos,
                         D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
                         HAS_QIDX: tl.constexpr, HAS_KIDX: tl.constexpr, IEEE: tl.constexpr):
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
        row_id = n * QC + ci
        chunks = tl.load(cum_ptr + row_id * (KC + 1) + KC)  # entries of this query cluster's chunk list
        ent_row = ent_ptr + row_id * MAXCH
        r = tl.arange(0, BLOCK_N)
        r_chunk = r // CHUNK
        r_off = r % CHUNK
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
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
            if IEEE:
                qk = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                qk = tl.dot(q, tl.trans(k))
            # The first entry of every tile is a real chunk, so m_new is finite from the first tile on.
            qk = qk * scale_log2 + bias[None, :]
            m_new = tl.maximum(m_i, tl.max(qk, axis=1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(qk - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            vt = tl.load(v_ptr + n * svn + krow[:, None] * svs + d[None, :])
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
    elif (plan.config.block_m, plan.config.chunk, plan.config.block_n) != (cfg.block_m, cfg.chunk, cfg.block_n):
        raise ValueError(f"plan was made for {plan.config}; the call has config {cfg}")
    num_tiles = plan.tile_cluster.shape[1]
    if out is None:
        out = torch.empty(n, s, d, dtype=q.dtype, device=q.device)
    elif out.shape != q.shape or out.dtype != q.dtype or not out.is_contiguous():
        raise ValueError(f"out is {tuple(out.shape)} {out.dtype}; expected a contiguous {tuple(q.shape)} {q.dtype} tensor")
    qidx = q_order.contiguous() if q_order is not None else plan.tile_row  # dummy pointer when unused
    kidx = k_order.contiguous() if k_order is not None else plan.tile_row
    args = (q, k, v, out, qidx, kidx, plan.tile_cluster, plan.tile_row, plan.tile_end, plan.cum, plan.entries,
            s, qc, kc, num_tiles, plan.entries.shape[-1], math.log2(math.e) / math.sqrt(d),
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1))
    consts = dict(D=d, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, CHUNK=cfg.chunk, HAS_QIDX=q_order is not None,
                  HAS_KIDX=k_order is not None, IEEE=q.dtype == torch.float32, num_warps=cfg.num_warps)
    key = (q.device, q.dtype, d, cfg)
    stages = _STAGES_THAT_FIT.get(key, cfg.num_stages)
    while True:
        try:
            _varblock_fwd_kernel[(num_tiles, n)](*args, **consts, num_stages=stages)
            break
        except OutOfResources:
            # GPUs with less shared memory than the H200 (e.g. 100 KB per block): fewer K/V buffers.
            if stages <= 1:
                raise
            stages -= 1
    _STAGES_THAT_FIT[key] = stages
    return out.reshape(shape)
