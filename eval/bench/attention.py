"""One attention call at real video-model shapes, every method side by side in one process (CUDA only).

    python -m eval.bench.attention                      # all shapes, random + structured inputs
    python -m eval.bench.attention --shapes wan_t2v_14b_720p --inputs structured --repeats 5

Times (CUDA events, warm-up, median of repeats): dense SDPA (cuDNN, flash), FlexAttention with random
128-token blocks at SVG2's density, the positional method and SVG2 on our kernel (whole call, and the
stage breakdown), the sparse kernel alone, the permutation gathers, and k-means next to flash-kmeans on
the same inputs. Effective TFLOP/s count only the kept query-key pairs (4·pairs·D). Shapes are
``eval.shapes`` names (a joint model's prompt tokens join the self-attention). Writes a tidy CSV and a figure.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import traceback

import torch

from eval.bench.rows import RowWriter
from svg2.timing import Clock, median_ms
from eval.shapes import ModelShape, get_shape, parse_shapes
from eval.synthetic import structured_qkv
from svg2.attention import dense_attention
from svg2.kernels.permute import gather_rows
from svg2.kernels.kmeans import ASSIGN_CONFIGS, AssignConfig, assign_nearest
from svg2.kernels.varblock import config_name, default_config, make_plan, parse_config, varblock_attention
from svg2.kmeans import kmeans, kmeans_update
from svg2.methods import build_method, svg2_preset

DEFAULT_SHAPES = "wan_t2v_1.3b_480p,wan_t2v_14b_720p,hunyuan_720p"  # 12 x 32,760; 40 x 75,600; 24 x 119,056
CUDA_CLOCK = Clock("cuda")


def time_ms(fn, repeats: int, warmup: int = 1) -> float:
    return median_ms(CUDA_CLOCK, fn, repeats, warmup)


def peak_extra_bytes(fn) -> int:
    """Peak device memory fn allocates beyond what is live before it (its output included)."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    del out
    return extra


def structured(shape: ModelShape, scale: float, seed: int = 0, heads: int | None = None):
    extra = shape.attention_tokens - shape.video_tokens  # a joint model's prompt tokens, unstructured, last
    return structured_qkv(heads or shape.heads, shape.grid, shape.head_dim, scale=scale, extra=extra, seed=seed)


def random_qkv(shape: ModelShape, seed: int = 0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.randn(1, shape.heads, shape.attention_tokens, shape.head_dim, device="cuda", generator=g,
                        dtype=torch.bfloat16) for _ in range(3)]


def svg2_density(q, k, v, shape: ModelShape) -> float:
    m = build_method("svg2", **_svg2_cfg(shape, iters_first=10))
    m(q, k, v)
    return m.stats[-1].as_row()["density"]


def calibrate(shape: ModelShape, target: float = 0.27) -> float:
    """Input scale whose SVG2 density (top_p 0.9) is closest to ``target``, on 4 heads."""
    best = None
    for scale in (0.5, 0.55, 0.6, 0.65, 0.7, 0.8):
        q, k, v = structured(shape, scale, heads=4)
        dens = svg2_density(q, k, v, shape)
        print(f"  calibrate {shape.name}: scale {scale} -> density {dens:.3f}", flush=True)
        if best is None or abs(dens - target) < abs(best[1] - target):
            best = (scale, dens)
    return best[0]


def _svg2_cfg(shape: ModelShape, iters_first: int = 50) -> dict:
    """The shape's upstream svg2 preset, every call sparse (no warm-up), 2 warm k-means iterations."""
    return svg2_preset(shape.name, dense_steps=0, dense_layers=0, kmeans_iters_first=iters_first,
                           kmeans_iters_step=2, check_finite=False, profile=False).__dict__


def flex_block_mask(heads: int, s: int, density: float, block: int = 128, seed: int = 0):
    from torch.nn.attention.flex_attention import BlockMask

    nb = math.ceil(s / block)
    count = max(1, round(density * nb))
    g = torch.Generator(device="cuda").manual_seed(seed)
    idx = torch.rand(1, heads, nb, nb, device="cuda", generator=g).argsort(-1).to(torch.int32)
    num = torch.full((1, heads, nb), count, device="cuda", dtype=torch.int32)
    return BlockMask.from_kv_blocks(num, idx, BLOCK_SIZE=block), count / nb


def bench_shape(shape: ModelShape, inputs: str, args, writer: RowWriter):
    s, h, D = shape.attention_tokens, shape.heads, shape.head_dim
    qc = _svg2_cfg(shape)["num_q_clusters"]
    if inputs == "structured":
        scale = calibrate(shape)
        q, k, v = structured(shape, scale)
    else:
        scale = None
        q, k, v = random_qkv(shape)
    qkv_bytes = 3 * q.numel() * q.element_size()
    dense_flop = 4 * h * s * s * D

    def add(method, ms, density=1.0, config="", **extra):
        tflops = density * dense_flop / ms / 1e9
        writer.add(dict(shape=shape.name, heads=h, seq_len=s, head_dim=D, inputs=inputs, input_scale=scale,
                        method=method, config=config, density=density, ms=ms, eff_tflops=tflops, **extra))
        print(f"{shape.name:13s} {inputs:10s} {method:22s} {config:28s} d={density:.3f} {ms:9.3f} ms "
              f"{tflops:6.1f} TFLOP/s {extra if extra else ''}", flush=True)

    # Dense baselines.
    for backend in ("cudnn", "flash"):
        if inputs == "random" or args.dense_both:
            add(f"dense_{backend}", time_ms(lambda: dense_attention(q, k, v, backend), args.repeats_dense))

    # SVG2: warm the caches (50 iterations from seeded init), then steady-state calls with 2 iterations.
    m = build_method("svg2", **_svg2_cfg(shape))
    m(q, k, v)
    ms_call = time_ms(lambda: m(q, k, v), args.repeats)
    density = m.stats[-1].as_row()["density"]
    cfg = f"QC{qc} KC1000 p0.9 it2"
    extra_b = peak_extra_bytes(lambda: m(q, k, v)) - q.numel() * q.element_size()  # beyond the output
    add("svg2", ms_call, density, cfg, peak_extra_gib=extra_b / 2**30, peak_extra_over_qkv=extra_b / qkv_bytes)
    m.config.profile = True
    for _ in range(args.repeats):
        m(q, k, v)
    stages = {}
    for st in m.stats[-args.repeats:]:
        for key, val in st.as_row().items():
            if key.startswith("ms_"):
                stages.setdefault(key, []).append(val)
    breakdown = {key: statistics.median(vals) for key, vals in stages.items()}
    add("svg2_profiled", sum(breakdown.values()), density, cfg, **breakdown)
    m.config.profile = False

    # The same plan executed by the fused kernel (q, k, v read and the output written through the orders).
    layer_state = m.state.layer(0, 0)
    n = h
    flat = [t.reshape(n, s, D) for t in (q, k, v)]
    from svg2.timing import StageTimer

    def fused_call():
        plan = m.plan(q, k, v, layer_state, None, StageTimer(q.device, enabled=False))
        bm = plan.block_map
        return varblock_attention(*flat, bm.keep, bm.row_sizes, bm.col_sizes, q_order=plan.q_perm.order,
                                  k_order=plan.k_perm.order)
    ms_fused = time_ms(fused_call, args.repeats)
    extra_f = peak_extra_bytes(fused_call) - q.numel() * q.element_size()
    add("svg2_fused", ms_fused, density, cfg, peak_extra_gib=extra_f / 2**30, peak_extra_over_qkv=extra_f / qkv_bytes)

    # Kernel alone on the permuted tensors, plus the permutation gathers.
    plan = m.plan(q, k, v, layer_state, None, StageTimer(q.device, enabled=False))
    bm = plan.block_map
    qp, kp = plan.q_perm.order, plan.k_perm.order
    permuted = [gather_rows(flat[0], qp), gather_rows(flat[1], kp), gather_rows(flat[2], kp)]
    kept = bm.kept_pairs().sum().item()
    plan_density = kept / (h * s * s)
    sweep = shape.name in args.sweep.split(",") and inputs == "structured"
    configs = [default_config()] + ([parse_config(spec) for spec in args.kernel_configs.split(",") if spec]
                                     if sweep else [])
    for c in configs:
        vplan = make_plan(bm.keep.reshape(n, *bm.keep.shape[-2:]), bm.row_sizes.reshape(n, -1),
                          bm.col_sizes.reshape(n, -1), s, c)
        name = config_name(c)
        try:
            ms = time_ms(lambda: varblock_attention(*permuted, bm.keep, bm.row_sizes, bm.col_sizes, config=c,
                                                    plan=vplan), args.repeats)
        except Exception as err:  # a config that does not compile (shared memory, registers) is reported
            print(f"{name}: failed ({type(err).__name__}: {err})")
            continue
        add("varblock_kernel", ms, plan_density, name)
        if c == configs[0]:
            # q read and the output written through the query order; k, v permuted (what the method runs).
            ms = time_ms(lambda: varblock_attention(flat[0], *permuted[1:], bm.keep, bm.row_sizes, bm.col_sizes,
                                                    config=c, plan=vplan, q_order=qp), args.repeats)
            add("varblock_kernel_qorder", ms, plan_density, name)
            ms = time_ms(lambda: varblock_attention(*flat, bm.keep, bm.row_sizes, bm.col_sizes, config=c, plan=vplan,
                                                    q_order=qp, k_order=kp), args.repeats)
            add("varblock_kernel_fused", ms, plan_density, name)
    dc = default_config()
    ms = time_ms(lambda: make_plan(bm.keep.reshape(n, *bm.keep.shape[-2:]), bm.row_sizes.reshape(n, -1),
                                   bm.col_sizes.reshape(n, -1), s, dc), args.repeats)
    add("varblock_plan", ms, 0.0, config_name(dc))
    ms_perm = time_ms(lambda: [gather_rows(flat[0], qp), gather_rows(flat[1], kp), gather_rows(flat[2], kp),
                               gather_rows(permuted[0], plan.q_perm.inverse)], args.repeats)
    add("permute_qkv_and_inverse", ms_perm, 0.0, "4 row gathers")
    ms_perm_kv = time_ms(lambda: [gather_rows(flat[1], kp), gather_rows(flat[2], kp)], args.repeats)
    add("permute_kv", ms_perm_kv, 0.0, "2 row gathers (what an svg2 call materialises)")
    del permuted

    # k-means: ours vs flash-kmeans, Q (QC) and K (1000), 2 iterations from the same warm centroids.
    cq, ck = layer_state.q_centroids, layer_state.k_centroids
    ms_ours = time_ms(lambda: (kmeans(flat[0], qc, 2, centroids=cq), kmeans(flat[1], 1000, 2, centroids=ck)),
                      args.repeats)
    add("kmeans_ours", ms_ours, 0.0, f"Q{qc}+K1000 it2")
    labels = assign_nearest(flat[1], ck)
    for ac in [ASSIGN_CONFIGS["h200"]] + ([AssignConfig(256, 128, 8, 3), AssignConfig(128, 64, 4, 3),
                                           AssignConfig(128, 128, 4, 4), AssignConfig(64, 128, 4, 3)] if sweep else []):
        ms = time_ms(lambda: assign_nearest(flat[1], ck, ac), args.repeats)
        add("kmeans_assign_k", ms, 0.0, f"K1000 one pass S{ac.block_s} K{ac.block_k} w{ac.num_warps} s{ac.num_stages}",
            tflops_assign=2 * n * s * 1000 * D / ms / 1e9)
    add("kmeans_update_k", time_ms(lambda: kmeans_update(flat[1], labels, ck), args.repeats), 0.0, "K1000 one pass")
    add("sort_labels_k", time_ms(lambda: torch.sort(labels, dim=1), args.repeats), 0.0, "torch.sort (N, S) int64")
    try:
        from flash_kmeans import batch_kmeans_Euclid

        cqb, ckb = cq.to(q.dtype), ck.to(q.dtype)
        ms_fk = time_ms(lambda: (batch_kmeans_Euclid(flat[0], qc, max_iters=2, tol=-1.0, init_centroids=cqb),
                                 batch_kmeans_Euclid(flat[1], 1000, max_iters=2, tol=-1.0, init_centroids=ckb)),
                        args.repeats)
        add("kmeans_flash_kmeans", ms_fk, 0.0, f"Q{qc}+K1000 it2")
    except Exception as err:  # a missing or broken peer is reported, not fatal
        print(f"flash-kmeans failed ({type(err).__name__}: {err}); skipped")

    # Positional blocks of 128 tokens on the same kernel.
    pm = build_method("positional", block_size=128, top_p=0.9, min_kc_ratio=0.1, check_finite=False, profile=False)
    pm(q, k, v)
    ms_pos = time_ms(lambda: pm(q, k, v), args.repeats)
    add("positional", ms_pos, pm.stats[-1].as_row()["density"], "block128 p0.9")

    # FlexAttention at SVG2's density.
    if args.flex:
        try:
            bench_flex(q, k, v, density, args, add)
        except Exception as err:  # FlexAttention compilation is the fragile part of this benchmark
            print(f"FlexAttention failed ({type(err).__name__}: {err}); skipped")
    del q, k, v, flat


def bench_flex(q, k, v, density, args, add):
    """FlexAttention with random 128-token blocks at the given density (S padded to a multiple of 128)."""
    from torch.nn.attention.flex_attention import flex_attention

    h, s = q.shape[1], q.shape[2]
    flex = torch.compile(flex_attention, dynamic=False)
    pad = math.ceil(s / 128) * 128 - s
    qf, kf, vf = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    mask, kept_frac = flex_block_mask(h, s + pad, density)
    ms_flex = time_ms(lambda: flex(qf, kf, vf, block_mask=mask), args.repeats, warmup=2)
    add("flex_block128", ms_flex, kept_frac * (s + pad) ** 2 / s**2, f"random blocks, S padded to {s + pad}")
    del qf, kf, vf


def plot(df, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    calls = df[df.method.isin(["dense_cudnn", "dense_flash", "flex_block128", "positional", "svg2", "svg2_fused"])]
    shapes = list(dict.fromkeys(calls["shape"]))
    fig, axes = plt.subplots(1, len(shapes), figsize=(5 * len(shapes), 4), squeeze=False)
    for ax, name in zip(axes[0], shapes):
        sub = calls[calls["shape"] == name]
        labels = [f"{r.method}\n{r.inputs[:6]} d={r.density:.2f}" for r in sub.itertuples()]
        ax.barh(range(len(sub)), sub.ms, color=["C0" if m.startswith("dense") else "C1" for m in sub.method])
        ax.set_yticks(range(len(sub)), labels, fontsize=7)
        ax.set_xlabel("ms per attention call")
        ax.set_title(f"{name} ({sub.heads.iloc[0]}x{sub.seq_len.iloc[0]}x{sub.head_dim.iloc[0]}, bf16)")
    fig.suptitle(f"One attention call on {df.gpu.iloc[0]}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default=DEFAULT_SHAPES, help="comma-separated eval.shapes names")
    p.add_argument("--inputs", default="random,structured")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--repeats-dense", type=int, default=5)
    p.add_argument("--dense-both", action="store_true", help="time dense SDPA on structured inputs too")
    p.add_argument("--no-flex", dest="flex", action="store_false")
    p.add_argument("--sweep", default="", help="shapes (comma-separated) on which to time several kernel tile configs")
    p.add_argument("--kernel-configs", default="M64 N64 w4 s3 c8,M128 N128 w8 s3 c16,M64 N64 w4 s3 c16 kg",
                   help="comma-separated sparse-kernel configs timed on --sweep shapes, e.g. 'M64 N64 w4 s3 c16 km' "
                        "(svg2.kernels.varblock.parse_config)")
    p.add_argument("--out", default="results/bench/attention_h200.csv")
    args = p.parse_args(argv)
    try:
        shapes = parse_shapes(args.shapes)
        for name in filter(None, args.sweep.split(",")):
            get_shape(name)
    except ValueError as err:
        raise SystemExit(f"--shapes/--sweep: {err}")
    if not torch.cuda.is_available():
        raise SystemExit("eval.bench.attention needs a CUDA device")
    writer = RowWriter(args.out, dtype="bfloat16")  # rewritten after every row: an interrupted run keeps them
    for shape in shapes:
        for inputs in args.inputs.split(","):
            try:
                bench_shape(shape, inputs, args, writer)
            except Exception:  # keep the rows of the other shapes; the traceback says what broke
                traceback.print_exc()
            torch.cuda.empty_cache()
    df = writer.frame()
    plot(df, os.path.splitext(args.out)[0] + ".png")
    return df


if __name__ == "__main__":
    main()
