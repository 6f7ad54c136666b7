"""How much work the sparse kernel's tiles add over the kept pairs of SVG2 plans (CPU; no GPU needed).

    python -m eval.bench.plan_padding                 # Wan 14B 720p grid, 2 heads, top_k 150 and top_p 0.9
    python -m eval.bench.plan_padding --heads 1 --out /tmp/padding.csv

Plans come from the svg2 method (QC 300, KC 1000, 50 k-means iterations; plain k-means query clusters and
``align_q_tile=64``) on the structured synthetic inputs that eval.bench.attention times
(``eval.synthetic.structured_qkv``, input scale 0.6). For each kernel tiling (BLOCK_M, chunk; BLOCK_N 64) it
prints ``svg2.kernels.varblock.tile_work`` over the exact kept pairs: 1.0 is no padding. Positional blocks of
128 tokens fill every tile, so this ratio is svg2's extra kernel work per unit of density
(svg2/kernels/NOTES.md).
"""
from __future__ import annotations

import argparse
import time

from eval.bench.rows import RowWriter
from eval.shapes import SHAPES, get_shape
from eval.synthetic import structured_qkv
from svg2.kernels.varblock import VarblockConfig, tile_work
from svg2.methods.base import LayerState
from svg2.methods.svg2 import SVG2Config, SVG2Method
from svg2.timing import StageTimer

TILINGS = [(m, c) for m in (32, 64, 128) for c in (1, 8, 16)]  # chunk 1: no chunk padding
BUDGETS = {"top_k 150": dict(top_k=150, top_p=None, min_kc_ratio=0.0),  # the e2e benchmark's svg2_d0.15 row
           "top_p 0.9": dict(top_k=None, top_p=0.9, min_kc_ratio=0.1)}  # the upstream preset


def padding_rows(shape_name: str = "wan_t2v_14b_720p", heads: int = 2, scale: float = 0.6, seed: int = 0,
                 qc: int = 300, kc: int = 1000, aligns=(0, 64)) -> list[dict]:
    """One row per (budget, align_q_tile, tiling). ``align_q_tile`` 64 moves a few queries so query clusters
    fill whole 64-row tiles (``svg2.align``); it changes which rows the block map holds, so its density is its own."""
    shape = get_shape(shape_name)
    q, k, v = structured_qkv(heads, shape.grid, shape.head_dim, scale=scale, seed=seed, device="cpu")
    rows = []
    for budget, fields in BUDGETS.items():
        for align in aligns:
            t0 = time.perf_counter()
            method = SVG2Method(SVG2Config(num_q_clusters=qc, num_k_clusters=kc, kmeans_iters_first=50,
                                           check_finite=False, profile=False, align_q_tile=align, **fields))
            bm = method.plan(q, k, v, LayerState(), None, StageTimer(q.device, enabled=False)).block_map
            kept = bm.kept_pairs().double().sum().item()
            for block_m, chunk in TILINGS:
                cfg = VarblockConfig(block_m=block_m, block_n=64, chunk=chunk)
                work = tile_work(bm.keep, bm.row_sizes, bm.col_sizes, cfg).sum().item()
                rows.append(dict(shape=shape_name, heads=heads, scale=scale, budget=budget, align_q_tile=align,
                                 density=round(bm.density().mean().item(), 4), block_m=block_m, block_n=64,
                                 chunk=chunk, work_over_kept=round(work / kept, 4)))
            print(f"{budget}, align {align}: density {rows[-1]['density']:.3f}, "
                  f"plan in {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", default="wan_t2v_14b_720p", choices=sorted(SHAPES))
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--out", default="results/bench/plan_padding_wan720p.csv")
    args = p.parse_args(argv)
    writer = RowWriter(args.out)
    for row in padding_rows(args.shape, args.heads):
        writer.add(row)
    df = writer.frame()
    print(df.pivot_table(index=["budget", "align_q_tile", "density"], columns=["block_m", "chunk"],
                         values="work_over_kept").to_string())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
