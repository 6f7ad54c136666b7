"""Every registered method's attention call at real video-model shapes, on the same structured inputs and against
cuDNN dense in the same run: call time, speedup, realised density, per-stage times (selection's share of the call)
and the attend stage's TFLOP/s on kept pairs, beside positional 128-token blocks at density 0.25 (full tiles).

    python -m eval.bench.methods                                      # GPU: every method, three shapes
    python -m eval.bench.methods --shapes wan_t2v_14b_720p --methods svg2,sta --repeats 5 --out /tmp/m.csv

Each method runs at its release preset for the shape where it has one (svg2.methods.method_preset), else at its
dataclass defaults, with no dense warm-up (every timed call is sparse). A call is timed after one untimed call
(kernel compilation, first-call clustering, static masks built), median of ``--repeats``; the stage times come from
one further profiled call (CUDA events per stage). Joint shapes (HunyuanVideo) plan the video tokens and keep the
text tokens dense, as in a generation.
"""
from __future__ import annotations

import argparse
import math
import traceback

import torch

from eval.bench.rows import RowWriter
from eval.shapes import ModelShape, parse_shapes
from eval.synthetic import structured_qkv
from svg2.attention import dense_attention
from svg2.methods import METHODS, build_method, method_preset
from svg2.timing import Clock, median_ms

SHAPES = "wan_t2v_1.3b_480p,wan_t2v_14b_720p,hunyuan_720p"
SELECTION = ("cluster", "permute", "select")


def method_config(name: str, shape: ModelShape, **overrides) -> dict:
    """The method's preset for the shape (or its defaults), every call sparse, no host-syncing checks."""
    return {**method_preset(name, shape.name), "dense_steps": 0, "dense_layers": 0, "check_finite": False,
            **overrides}


def bench_shape(shape: ModelShape, methods: list[str], args, writer: RowWriter, device: str = "cuda") -> None:
    extra = shape.text_tokens if shape.joint else 0
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    q, k, v = structured_qkv(shape.heads, shape.grid, shape.head_dim, scale=args.scale, extra=extra, seed=args.seed,
                             dtype=dtype, device=device)  # (1, H, S, D)
    joint = dict(video=slice(0, shape.video_tokens)) if extra else {}
    clock = Clock(device)
    s, d = q.shape[2], q.shape[3]
    pair_flops = 4 * d * shape.heads  # one kept query-key pair, all heads: QK^T and PV
    backend = "cudnn" if device == "cuda" else "auto"
    dense_ms = median_ms(clock, lambda: dense_attention(q, k, v, backend), args.repeats, 1)
    base = dict(shape=shape.name, heads=shape.heads, seq_len=s, head_dim=d, input_scale=args.scale, timer=clock.label,
                dense_cudnn_ms=dense_ms, dense_tflops=pair_flops * s * s / dense_ms / 1e9)
    writer.add(dict(base, method="dense_cudnn", label="cuDNN SDPA", density=1.0, call_ms=dense_ms, speedup=1.0))
    print(f"{shape.name}: cuDNN {dense_ms:.2f} ms ({base['dense_tflops']:.0f} TFLOP/s)", flush=True)
    nblocks = math.ceil(shape.video_tokens / 128)
    runs = [(name, method_config(name, shape)) for name in methods]
    runs.append(("positional", method_config("positional", shape, block_size=128, top_p=None, min_kc_ratio=0.0,
                                             top_k=max(1, round(0.25 * nblocks)))))  # full tiles at d 0.25
    for name, config in runs:
        try:
            method = build_method(name, **config, profile=False)
            call = lambda: method(q, k, v, grid=shape.grid, **joint)  # noqa: E731
            call()
            call_ms = median_ms(clock, call, args.repeats, 0)
            method.config.profile = True
            call()
            stats = method.stats[-1]
            row = stats.as_row()
            kept = float(stats.density if not torch.is_tensor(stats.density) else stats.density.double().mean())
            stages = {f"ms_{st}": row.get(f"ms_{st}", 0.0) for st in (*SELECTION, "attend")}
            selection = sum(stages[f"ms_{st}"] for st in SELECTION)
            profiled = selection + stages["ms_attend"]
            out = dict(base, method=name, label=method.config.label(), density=kept, call_ms=call_ms,
                       speedup=dense_ms / call_ms, **stages, selection_share=selection / profiled if profiled else None,
                       attend_tflops=pair_flops * kept * s * s / stages["ms_attend"] / 1e9 if stages["ms_attend"]
                       else None, ideal_fraction=kept * dense_ms / call_ms)
        except Exception as e:  # a method that cannot run this shape is recorded, not fatal
            traceback.print_exc()
            out = dict(base, method=name, error=f"{type(e).__name__}: {e}")
        writer.add(out)
        if "error" in out:
            print(f"  {name:12s} failed: {out['error']}", flush=True)
        else:
            print(f"  {out['label'][:34]:34s} d={out['density']:.3f} call {out['call_ms']:8.2f} ms "
                  f"({out['speedup']:.2f}x) select {100 * (out['selection_share'] or 0):4.1f}% "
                  f"attend {out['attend_tflops'] or 0:5.0f} TFLOP/s", flush=True)
        method = None
        if device == "cuda":
            torch.cuda.empty_cache()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default=SHAPES, help="comma-separated eval.shapes names")
    ap.add_argument("--methods", default="all", help="comma-separated method names, or all (but dense)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--scale", type=float, default=0.8, help="structured-input scale (the benchmarks' calibration)")
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--out", default="results/bench/methods_h200.csv")
    ap.add_argument("--toy", action="store_true", help="CPU, one toy shape (what the tests run; no speedups)")
    args = ap.parse_args(argv)
    if not args.toy and not torch.cuda.is_available():
        raise SystemExit("eval.bench.methods needs a CUDA device (or --toy)")
    methods = sorted(n for n in METHODS if n != "dense") if args.methods == "all" else args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"--methods {unknown}: expected some of {sorted(METHODS)}")
    writer = RowWriter(args.out)
    if args.toy:
        toy = ModelShape("toy", 1, 2, 64, 128, 4 * 16 * 16, 0, grid=(4, 16, 16), cfg_branches=1, steps=1)
        bench_shape(toy, methods, args, writer, device="cpu")
        return
    for shape in parse_shapes(args.shapes):
        bench_shape(shape, methods, args, writer)
    print(f"rows: {args.out}")


if __name__ == "__main__":
    main()
