"""CPU check of the torch sparse path: SVG2 against dense SDPA on one (B, H, S, D) input, in one process.

    python -m eval.bench.cpu                      # (1, 8, 8192, 64) fp32: grid 8x32x32, density ≈ 0.2
    python -m eval.bench.cpu --threads 1 --repeats 5

Times are CPU wall clock (median of repeats after a warm-up call) and are labelled as such: they say
whether the torch path avoids dense work on this machine, not what the method buys on a GPU. Writes
results/bench/cpu_attention.csv.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import pandas as pd
import torch

from eval.bench.rows import RowWriter
from svg2.timing import Clock, median_ms
from eval.metrics.attention import relative_l2
from eval.synthetic import structured_qkv
from svg2.attention import dense_attention
from svg2.methods import build_method


CPU_CLOCK = Clock("cpu")


def run(heads: int, grid, head_dim: int, scale: float, repeats: int, methods: dict[str, dict],
        path: Path | None = None) -> pd.DataFrame:
    q, k, v = structured_qkv(heads, grid, head_dim, scale=scale, dtype=torch.float32, device="cpu")
    shape = tuple(q.shape)
    dense_out = dense_attention(q, k, v)
    rows = [dict(method="dense", config="sdpa", density=1.0, rel_l2=0.0,
                 ms_call=median_ms(CPU_CLOCK, lambda: dense_attention(q, k, v), repeats))]
    for label, (name, cfg) in methods.items():
        m = build_method(name, **cfg)
        out = m(q, k, v)  # first call: clusters from scratch (kmeans_iters_first)
        calls = []

        def call():
            calls.append(m(q, k, v))  # later calls: warm-started, as on every denoising step after the first

        ms_call = median_ms(CPU_CLOCK, call, repeats)
        stats = [s.as_row() for s in m.stats[1:]]
        stage = {key: statistics.median(r[key] for r in stats) for key in stats[0] if key.startswith("ms_")}
        rows.append(dict(method=name, config=label, density=stats[-1]["density"], rel_l2=relative_l2(dense_out, calls[-1]),
                         ms_call=ms_call, **stage))
        del out
    writer = RowWriter(path, shape="x".join(map(str, shape)), threads=torch.get_num_threads(), timer="cpu_wall")
    for row in rows:
        row["speedup_vs_dense"] = rows[0]["ms_call"] / row["ms_call"]
        if "ms_attend" in row:
            row["attend_speedup_vs_dense"] = rows[0]["ms_call"] / row["ms_attend"]
        writer.add(row)
    return writer.frame()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--grid", type=int, nargs=3, default=[8, 32, 32], metavar=("T", "H", "W"), help="latent grid: S = T*H*W")
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--scale", type=float, default=0.9, help="semantic structure of the inputs (higher = sparser)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=Path("results/bench/cpu_attention.csv"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = {
        "svg2 QC100 KC250 top_p0.9": ("svg2", dict(num_q_clusters=100, num_k_clusters=250, top_p=0.9,
                                                    kmeans_iters_first=10, kmeans_iters_step=2)),
        "positional block128 top_p0.9": ("positional", dict(block_size=128, top_p=0.9)),
    }
    df = run(args.heads, tuple(args.grid), args.head_dim, args.scale, args.repeats, methods, args.out)
    cols = [c for c in ("method", "config", "density", "rel_l2", "ms_call", "ms_cluster", "ms_permute", "ms_select",
                        "ms_attend", "ms_unpermute", "speedup_vs_dense") if c in df]
    print(f"CPU wall clock, {df.loc[0, 'cpu']}, {df.loc[0, 'threads']} threads, shape {df.loc[0, 'shape']} fp32, "
          f"median of {args.repeats}")
    print(df[cols].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"wrote {args.out}")
    return df


if __name__ == "__main__":
    main()
