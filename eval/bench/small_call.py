"""Per-call cost of the sparse methods at the embedded model's size (1×2×4,096×64) on CUDA.

    python -m eval.bench.small_call                    # prints; results/bench/small_call_h200.log is one H200 run
    python -m eval.bench.small_call --out calls.csv    # also writes the per-call rows

For float32 and bfloat16, with q, k, v contiguous and in the diffusers layout (a transposed (B, S, H, D)
tensor): wall milliseconds per call (20 calls after a warm-up, synchronised) and the method's own stage
times; then a profiler table of one float32 positional call (kernels launched, GPU time per op). At this
size the GPU work is a fraction of a call: host-side planning and launches dominate.
"""
from __future__ import annotations

import argparse
import time

import torch

from eval.bench.rows import RowWriter
from svg2.checks import kernel_covers
from svg2.methods import build_method

SHAPE = (1, 2, 4096, 64)
METHODS = (("positional", dict(block_size=64, top_p=0.9, min_kc_ratio=0.1)),
           ("svg2", dict(num_q_clusters=16, num_k_clusters=64, top_p=0.9)))


def per_call_ms(method, args, calls: int = 20) -> float:
    method(*args)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        method(*args)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e3


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="CSV of the per-call rows (default: print only)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("eval.bench.small_call times CUDA calls; no CUDA device here")
    writer = RowWriter(args.out, shape="x".join(map(str, SHAPE)), timer="wall_synchronised")
    for dtype in (torch.float32, torch.bfloat16):
        q, k, v = (torch.randn(*SHAPE, device="cuda", dtype=dtype) for _ in range(3))
        qt = q.transpose(1, 2).contiguous().transpose(1, 2)  # the diffusers layout: (B, S, H, D) transposed
        print(dtype, "kernel_covers plain", kernel_covers(q), "transposed", kernel_covers(qt), flush=True)
        for name, cfg in METHODS:
            for label, args in (("plain", (q, k, v)), ("transposed", (qt, qt, qt))):
                m = build_method(name, **cfg)
                ms = per_call_ms(m, args)
                row = m.stats[-1].as_row()
                stages = {key: val for key, val in row.items() if key.startswith("ms_")}
                writer.add(dict(method=name, dtype=str(dtype).replace("torch.", ""), layout=label, ms_call=ms,
                                density=row["density"], **stages))
                stages = " ".join(f"{key[3:]}={val:.2f}" for key, val in stages.items())
                print(f"{name:10s} {str(dtype):15s} {label:10s} {ms:7.2f} ms/call density {row['density']:.3f} "
                      f"stages {stages}", flush=True)
    m = build_method("positional", **METHODS[0][1], profile=False, check_finite=False)
    q, k, v = (torch.randn(*SHAPE, device="cuda", dtype=torch.float32) for _ in range(3))
    m(q, k, v)
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        m(q, k, v)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12))
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
