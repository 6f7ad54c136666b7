"""The sparse kernel's schedule, built on the device from a block map (no host synchronisation).

A query cluster's kept key clusters, merged into runs where they are adjacent in the layout
(``run_lengths``), are read as key tiles of BLOCK_N rows in one of three tilings:
- ``mixed`` (default): every whole BLOCK_N rows of a run are one *box*, a tile of contiguous rows (one TMA
  copy on Hopper); what is left of each run (fewer than BLOCK_N rows) is cut into *chunks* of at most
  ``chunk`` rows, and BLOCK_N / chunk consecutive chunk-list entries form one gathered tile, so a remainder
  wastes at most chunk - 1 rows;
- ``box``: boxes only, the last box of a run masked to its rows (up to BLOCK_N - 1 padded rows per run; one
  loop, which Triton can warp-specialise);
- ``gather``: chunks only (every key tile gathered).
Boxes are listed as ``start * 256 + rows``, chunks as ``start * 64 + rows``.

Query tiles are BLOCK_M rows of one cluster (``split_m``: a cluster's last tile, when at most half full, is a
BLOCK_M / 2 tile of a second launch). The tile count has the shape bound ceil(S / BLOCK_M) + QC (each
cluster wastes at most one partial tile), so surplus programs exist; the ``compact`` launch order puts them
last, where they exit at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl


TILINGS = ("mixed", "box", "gather")
ORDERS = ("compact", "natural", "longest")


@dataclass(frozen=True)
class VarblockConfig:
    block_m: int = 64
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 3
    chunk: int = 16            # key rows per chunk-list entry (a power of two, 1..32, dividing block_n)
    tiling: str = "mixed"      # key tiles: "mixed" boxes + gathered remainders, "box" boxes only, "gather" none
    tma: bool = True           # load box tiles (and q) with TMA descriptors where the GPU has them (sm_90+)
    warp_specialize: bool = False  # producer/consumer warps on the box loop (tiling "box", tma, block_m 128)
    order: str = "compact"     # launch order of query tiles: "compact" (real tiles first, in sequence order; the
    #                            surplus of the tile bound last), "natural" (as numbered), "longest" (most key
    #                            tiles first)
    split_m: bool = False      # a cluster's last tile, if at most half full, runs as a BLOCK_M / 2 tile (second
    #                            launch): BLOCK_M / 2 query padding at the BLOCK_M tile's speed

    def __post_init__(self):
        c = self.chunk
        if c < 1 or c > 32 or c & (c - 1) or self.block_n % c:
            raise ValueError(f"chunk={c}; expected a power of two in 1..32 that divides block_n={self.block_n}")
        if self.tiling not in TILINGS:
            raise ValueError(f"tiling={self.tiling!r}; expected one of {TILINGS}")
        if self.order not in ORDERS:
            raise ValueError(f"order={self.order!r}; expected one of {ORDERS}")
        if self.warp_specialize and (self.tiling != "box" or self.block_m != 128 or self.num_stages > 2):
            raise ValueError(f"warp_specialize with tiling={self.tiling!r}, block_m={self.block_m}, num_stages="
                             f"{self.num_stages}; Triton 3.6 specialises one loop and splits 128 query rows over two "
                             "consumer warp groups, and 3 stages computed wrong results on the H200 (NOTES.md), so "
                             "it needs tiling='box', block_m=128 and num_stages <= 2")
        for name, top in (("block_m", 256), ("block_n", 128)):  # box rows are 8 bits of an entry
            b = getattr(self, name)
            if b < 1 or b > top or b & (b - 1):
                raise ValueError(f"{name}={b}; expected a power of two up to {top} (the kernel needs >= 16)")


_FLAGS = {"ws": "warp_specialize", "t": "tma", "h": "split_m"}
_WORDS = {"km": ("tiling", "mixed"), "kb": ("tiling", "box"), "kg": ("tiling", "gather"),
          "oc": ("order", "compact"), "on": ("order", "natural"), "ol": ("order", "longest")}
_SIZES = {"M": "block_m", "N": "block_n", "w": "num_warps", "s": "num_stages", "c": "chunk"}


def parse_config(spec: str) -> VarblockConfig:
    """'M64 N64 w4 s3 c16 km t1 ws0 oc h0' (any subset; the rest from VarblockConfig's defaults) -> VarblockConfig.
    Tilings km mixed, kb box, kg gather; orders oc compact, on natural, ol longest; h1 split_m."""
    fields = {}
    for tok in spec.split():
        key = "ws" if tok.startswith("ws") else tok[:1]
        val = tok[len(key):]
        if tok in _WORDS:
            fields[_WORDS[tok][0]] = _WORDS[tok][1]
        elif key in _FLAGS and val in ("0", "1"):
            fields[_FLAGS[key]] = val == "1"
        elif key in _SIZES and val.isdigit():
            fields[_SIZES[key]] = int(val)
        else:
            raise ValueError(f"kernel config {spec!r}: unknown token {tok!r}; expected e.g. 'M64 N64 w4 s3 c16 km ws0'")
    return VarblockConfig(**fields)


def config_name(c: VarblockConfig) -> str:
    """The inverse of parse_config: every field, in one short string."""
    word = {v: k for k, v in _WORDS.items()}
    return (f"M{c.block_m} N{c.block_n} w{c.num_warps} s{c.num_stages} c{c.chunk} {word['tiling', c.tiling]} "
            f"t{int(c.tma)} ws{int(c.warp_specialize)} {word['order', c.order]} h{int(c.split_m)}")


@dataclass
class QueryTiles:
    """One launch's query tiles; T is a shape bound, so some tiles are surplus (cluster -1)."""

    cluster: torch.Tensor       # (N, T) int32 query cluster of each tile, -1 for surplus tiles
    row: torch.Tensor           # (N, T) int32 first permuted row of the tile
    end: torch.Tensor           # (N, T) int32 end (exclusive) of the tile's cluster
    order: torch.Tensor | None  # (N * T,) int32 launch order over the flattened tiles (None: as numbered)
    block_m: int


@dataclass
class VarblockPlan:
    """Device-side schedule of one call; every tensor is built without host synchronisation."""

    tiles: QueryTiles           # BLOCK_M-row query tiles
    half_tiles: QueryTiles | None  # split_m: the BLOCK_M / 2-row last tiles of clusters, else None
    box_count: torch.Tensor     # (N, QC) int32 box tiles (contiguous key rows) of each query cluster
    boxes: torch.Tensor         # (N, QC, MAXBOX) int32 start * 256 + rows of each box; a zero slot after the last
    cum: torch.Tensor           # (N, QC, KC+1) int32 chunk-list entries before each key cluster; [..., KC] = total
    entries: torch.Tensor       # (N, QC, MAXCH) int32 start * 64 + length of each key chunk
    config: VarblockConfig


def make_plan(keep: torch.Tensor, row_sizes: torch.Tensor, col_sizes: torch.Tensor, seq_len: int,
              config: VarblockConfig) -> VarblockPlan:
    """keep (N, QC, KC) bool, row_sizes (N, QC), col_sizes (N, KC) -> the kernel's schedule.

    ``seq_len`` (S) comes from the tensors' shapes, so every list has a shape bound known on the host.
    Memory: about 4 · N · QC · (S / chunk + KC + S / BLOCK_N) bytes (Wan 14B 720p, QC 300, KC 1000, the default
    chunk 8 and BLOCK_N 128: 530 MB, 0.23× the bytes of q, k, v).
    """
    if seq_len >= 1 << 23:
        raise ValueError(f"S={seq_len}; the tile lists encode start * 256 + rows in int32, so S < 2**23")
    n, qc, kc = keep.shape
    bn, tiling = config.block_n, config.tiling
    cs = col_sizes.to(torch.int32)
    col_start = (torch.cumsum(cs, -1, dtype=torch.int32) - cs).contiguous()
    runs = run_lengths(keep, cs).to(torch.int32).contiguous()  # (N, QC, KC) rows of the run starting at j
    if tiling == "box":
        nbox = (runs + bn - 1) // bn
    elif tiling == "mixed":
        nbox = runs // bn
    else:
        nbox = torch.zeros_like(runs)
    rest = runs - nbox * bn if tiling != "box" else torch.zeros_like(runs)
    cum = _cumsum0((rest + config.chunk - 1) // config.chunk)
    entries = _fill_list(cum, col_start, runs, _max_chunks(seq_len, kc, config) if tiling != "box" else 1,
                         config.block_n // config.chunk, config.chunk, mode=_MODES[tiling][0], block_n=bn)
    box_cum = _cumsum0(nbox)
    box_count = box_cum[..., kc].contiguous()
    boxes = _fill_list(box_cum, col_start, runs, (seq_len // bn + kc + 1) if tiling == "box" else seq_len // bn + 1,
                       1, bn, mode=_MODES[tiling][1], block_n=bn)
    per_tile = config.block_n // config.chunk
    key_tiles = box_count + (cum[..., kc] + per_tile - 1) // per_tile  # (N, QC) key tiles of each query cluster
    bm = config.block_m
    if config.split_m:
        tiles = _query_tiles(row_sizes, seq_len, bm, "split", key_tiles, config.order)
        half = _query_tiles(row_sizes, seq_len, bm // 2, "half", key_tiles, config.order)
    else:
        tiles, half = _query_tiles(row_sizes, seq_len, bm, "all", key_tiles, config.order), None
    return VarblockPlan(tiles, half, box_count, boxes, cum, entries, config)


# tiling -> (chunk-list mode, box-list mode) of _list_fill_kernel
_MODES = {"mixed": (1, 2), "box": (0, 3), "gather": (0, 2)}


def _cumsum0(counts: torch.Tensor) -> torch.Tensor:
    """(..., KC) counts -> (..., KC+1) int32 exclusive prefix sums with the total last."""
    out = torch.zeros(*counts.shape[:-1], counts.shape[-1] + 1, dtype=torch.int32, device=counts.device)
    torch.cumsum(counts, dim=-1, out=out[..., 1:])
    return out


def _query_tiles(row_sizes: torch.Tensor, seq_len: int, block_m: int, part: str, key_tiles: torch.Tensor,
                 order: str) -> QueryTiles:
    """Query tiles of every cluster of r rows: ``all`` ceil(r / block_m) tiles; ``split`` the same but for a last
    tile holding at most block_m / 2 rows; ``half`` that tile alone (block_m here is the half size)."""
    n, qc = row_sizes.shape
    rs = row_sizes.to(torch.int64)
    if part == "all":
        tiles, skip, num_tiles = (rs + block_m - 1) // block_m, torch.zeros_like(rs), triton.cdiv(seq_len, block_m) + qc
    elif part == "split":  # whole tiles, and a last one only if it holds more than half a tile
        tiles = rs // block_m + (rs % block_m > block_m // 2).to(torch.int64)
        skip, num_tiles = torch.zeros_like(rs), triton.cdiv(seq_len, block_m) + qc
    else:  # "half": one tile of block_m rows where the full-size tiles leave 1..block_m rows
        full = 2 * block_m
        tiles = ((rs % full > 0) & (rs % full <= block_m)).to(torch.int64)
        skip, num_tiles = (rs // full) * full, qc
    tiles_end = torch.cumsum(tiles, -1)                 # inclusive
    t = torch.arange(num_tiles, device=rs.device).expand(n, num_tiles).contiguous()
    ci = torch.searchsorted(tiles_end, t, right=True)   # (N, T) in [0, QC]; QC = past the last tile
    cic = ci.clamp_max(qc - 1)
    row_start = torch.cumsum(rs, -1) - rs
    start = row_start.gather(1, cic)
    tile_row = start + skip.gather(1, cic) + (t - (tiles_end - tiles).gather(1, cic)) * block_m
    tile_end = start + rs.gather(1, cic)
    cluster = torch.where(ci < qc, ci, torch.full_like(ci, -1))
    launch = None
    if order == "compact":  # real tiles first, each sequence's in order; surplus programs exit at the end
        launch = torch.argsort((cluster < 0).flatten().to(torch.int8), stable=True)
    elif order == "longest":
        work = torch.where(cluster >= 0, key_tiles.gather(1, cic), -1)
        launch = torch.argsort(work.flatten(), descending=True, stable=True)
    return QueryTiles(*(x.to(torch.int32).contiguous() for x in (cluster, tile_row, tile_end)),
                      launch.to(torch.int32) if launch is not None else None, block_m)


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
    tiles of BLOCK_M rows; each run of its kept key clusters gives box tiles of BLOCK_N rows (floor(rows /
    BLOCK_N) in the mixed tiling, ceil in the box tiling, none in the gather tiling) and what they leave
    ceil(rest / chunk) chunk-list entries, read BLOCK_N / chunk entries per gathered key tile. Over
    ``BlockMap.kept_pairs`` this is the work the kernel spends on padding (NOTES.md).
    """
    bn, bm = config.block_n, config.block_m
    r = row_sizes.double()
    if config.split_m:  # whole tiles, then one tile of bm or bm / 2 rows for what is left
        rest = r - torch.floor(r / bm) * bm
        rows = r - rest + torch.where(rest > bm // 2, bm, torch.where(rest > 0, bm // 2, 0))
    else:
        rows = torch.ceil(r / bm) * bm
    runs = run_lengths(keep, col_sizes).double()
    if config.tiling == "box":
        return (rows * (torch.ceil(runs / bn) * bn).sum(-1)).sum(-1)
    full = torch.floor(runs / bn) * bn if config.tiling == "mixed" else torch.zeros_like(runs)
    entries = torch.ceil((runs - full) / config.chunk).sum(-1)
    keys = full.sum(-1) + torch.ceil(entries * config.chunk / bn) * bn
    return (rows * keys).sum(-1)


def _max_chunks(seq_len: int, num_clusters: int, config: VarblockConfig) -> int:
    """Entries per query cluster in the chunk list: sum_j ceil(size_j / chunk) <= S / chunk + KC, rounded up
    to whole key tiles, plus one tile, so that the kernel may read the tile after a row's last without a check."""
    per_tile = config.block_n // config.chunk
    return (triton.cdiv(triton.cdiv(seq_len, config.chunk) + num_clusters, per_tile) + 1) * per_tile


def _fill_list(cum, col_start, runs, length: int, per_tile: int, step: int, *, mode: int, block_n: int):
    """(N, QC, length) int32 list of one kind, ``mode``: chunks of whole runs (0), chunks of what whole boxes
    leave (1), whole boxes (2), boxes with each run's last one partial (3). ``cum`` (N, QC, KC+1) counts the
    items before each key cluster; slots past a row's last item, up to the end of the tile after it
    (``per_tile`` items a tile), are 0; later ones are never written."""
    n, qc, kc1 = cum.shape
    out = torch.empty(n, qc, length, dtype=torch.int32, device=cum.device)
    block = 256
    _list_fill_kernel[(triton.cdiv(length, block), n * qc)](
        cum, col_start, runs, out, qc, kc1 - 1, length, PER_TILE=per_tile, STEP=step, MODE=mode,
        BLOCK_N=block_n, BLOCK=block, SEARCH_STEPS=int(kc1 - 1).bit_length(), num_warps=4)
    return out


@triton.jit
def _list_fill_kernel(cum_ptr, start_ptr, run_ptr, out_ptr, QC, KC, LENGTH,
                      PER_TILE: tl.constexpr, STEP: tl.constexpr, MODE: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK: tl.constexpr, SEARCH_STEPS: tl.constexpr):
    pid = tl.program_id(0)
    row = tl.program_id(1).to(tl.int64)  # n * QC + query cluster
    n = row // QC
    cum_row = cum_ptr + row * (KC + 1)
    total = tl.load(cum_row + KC)
    if pid * BLOCK < (tl.cdiv(total, PER_TILE) + 1) * PER_TILE:  # later slots are never read
        m = pid * BLOCK + tl.arange(0, BLOCK)
        # Largest j in [0, KC] with cum[j] <= m: the run whose items hold slot m (its count is > 0).
        lo = tl.zeros([BLOCK], tl.int32)
        hi = tl.full([BLOCK], 1, tl.int32) + KC
        for _ in tl.static_range(SEARCH_STEPS):
            mid = (lo + hi) >> 1
            go = tl.load(cum_row + mid) <= m
            lo = tl.where(go, mid, lo)
            hi = tl.where(go, hi, mid)
        j = tl.minimum(lo, KC - 1)
        run = tl.load(run_ptr + row * KC + j)
        start = tl.load(start_ptr + n * KC + j)
        if MODE == 1:  # the rows after the run's whole boxes
            skip = (run // BLOCK_N) * BLOCK_N
            start += skip
            run -= skip
        if MODE == 2:
            run = (run // BLOCK_N) * BLOCK_N
        off = (m - tl.load(cum_row + j)) * STEP
        if MODE >= 2:
            item = (start + off) * 256 + tl.minimum(run - off, STEP)
        else:
            item = (start + off) * 64 + tl.minimum(run - off, STEP)
        tl.store(out_ptr + row * LENGTH + m, tl.where(m < total, item, 0), mask=m < LENGTH)
