"""One transformer forward per attention method at real video-model configurations (random weights, bf16),
with the Amdahl ceiling each sparse method could reach.

    python -m eval.bench.e2e                                        # GPU: Wan 1.3B 480p, Wan 14B 720p, Hunyuan 720p
    python -m eval.bench.e2e --shapes wan_t2v_14b_720p --layers 8   # fewer layers of the same shape
    python -m eval.bench.e2e --toy --out /tmp/e2e.csv               # CPU, toy sizes (what the tests run)
    torchrun --nproc-per-node=2 -m eval.bench.e2e --shapes wan_t2v_14b_720p --out results/bench/e2e_h200x2.csv

Shapes are ``eval.shapes`` names; the transformer is built from the shape's public configuration
(``eval.shapes.build_transformer``) and fed ``eval.shapes.transformer_inputs``: smooth latent fields
(structured inputs), so the top-p presets find real clusters.

Methods are installed with ``svg2.diffusers.apply`` exactly as in a generation. Per method: one warm-up
forward (kernel compilation, k-means from scratch), then the first sparse step of a generation (k-means
from scratch: ``ms_cold``) and ``--repeats`` later steps (warm-started k-means: ``ms_step``, median), all
timed with CUDA events. Self-attention time per layer comes from the method's own per-call events.

Amdahl ceiling of a sparse step: everything but self-attention (from the fastest dense run) plus, per
layer, its density times that layer's dense self-attention time. ``ceiling_fraction`` = ceiling / measured.
Generation time: ``steps`` x CFG branches, the first ``warmup_fraction`` of steps dense with the fastest
backend, then one cold sparse step and warm ones. Speedups are against the fastest dense backend.
CPU rows are labelled ``timer=cpu_wall`` and are not speedups of the method.

Under torchrun every method runs with Ulysses sequence parallelism over the launched ranks (one GPU each; gloo
processes on the CPU): the all-to-alls are inside the timed forward, rank 0's times are the row's, each rank's
warm step is in ``ms_step_ranks``, and rank 0 writes the rows (``world_size``). Scaling efficiency at P GPUs is
``ms_step`` at one GPU / (P x ``ms_step`` at P), same shape and method.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

from eval.bench.rows import RowWriter
from eval.ranks import Ranks, launched, rank_device
from svg2.timing import Clock
from eval.shapes import (ModelShape, build_transformer, from_transformer, load_config, parse_shapes,
                         transformer_inputs)
from svg2.diffusers import apply, remove
from svg2.methods import build_method, method_preset, svg2_preset
from svg2.timing import STAGES

DEFAULT_SHAPES = "wan_t2v_1.3b_480p,wan_t2v_14b_720p,hunyuan_720p"
BLOCK_SIZE = 128  # positional blocks at the real shapes


def _toy(name: str, folder: str, text_tokens: int, **changes) -> ModelShape:
    """A real configuration shrunk to CPU size: 9 frames of 128x128 pixels, 192 video tokens."""
    return from_transformer(name, {**load_config(folder, "transformer"), **changes}, (9, 128, 128), text_tokens)


TOY = {s.name: s for s in (
    _toy("wan_toy", "Wan2.1-T2V-14B-Diffusers", 16, attention_head_dim=16, num_attention_heads=2, ffn_dim=64,
         num_layers=2, text_dim=32, freq_dim=32),
    _toy("hunyuan_toy", "HunyuanVideo", 8, num_attention_heads=2, attention_head_dim=24,
         num_layers=1, num_single_layers=1, num_refiner_layers=1, text_embed_dim=16, pooled_projection_dim=8,
         rope_axes_dim=(8, 8, 8)),
)}
TOY_SIZES = dict(block_size=16, num_q_clusters=8, num_k_clusters=16)  # method sizes at the toy shapes


def with_layers(shape: ModelShape, layers: int | None) -> ModelShape:
    """The same shapes with ``layers`` transformer blocks (Hunyuan keeps its 1:2 double:single ratio)."""
    if layers is None:
        return shape
    if "num_single_layers" in shape.transformer_config:
        double = max(1, round(layers / 3))
        return shape.with_transformer(num_layers=double, num_single_layers=max(1, layers - double))
    return shape.with_transformer(num_layers=layers)


def method_sizes(shape: ModelShape):
    """(svg2 preset, positional block size) of a shape: the upstream preset at real shapes, tiny at toy ones."""
    if shape.name in TOY:
        sizes = {k: v for k, v in TOY_SIZES.items() if k != "block_size"}
        return svg2_preset("wan_t2v_1.3b_480p", **sizes), TOY_SIZES["block_size"]
    return svg2_preset(shape.name), BLOCK_SIZE


def bench_methods(shape: ModelShape, densities, dense_backends,
                  presets=("svg2", "positional"), align_q_tile: int = 0, others=()) -> dict[str, tuple[str, dict]]:
    """label -> (method name, config). Fixed densities are top-k budgets of ``d`` x (key clusters or
    blocks); the measured density is in each row. The preset uses its own top-p budget. ``align_q_tile`` > 0
    adds an svg2 row per density with query clusters aligned to that many rows (``svg2_d{d}_a{tile}``).
    ``others``: more methods at their release presets for the shape (``svg2.methods.method_preset``), warm-up
    included where the release has one (``<name>_preset``)."""
    preset, block_size = method_sizes(shape)
    common = dict(check_finite=False, profile=True)
    methods = {f"dense_{b}": ("dense", dict(common, dense_backend=b)) for b in dense_backends}
    blocks = math.ceil(shape.video_tokens / block_size)
    for d in densities:
        methods[f"positional_d{d:g}"] = ("positional", dict(
            common, block_size=block_size, top_p=None, top_k=max(1, round(d * blocks)), min_kc_ratio=0.0))
        methods[f"svg2_d{d:g}"] = ("svg2", dict(
            common, num_q_clusters=preset.num_q_clusters, num_k_clusters=preset.num_k_clusters, top_p=None,
            top_k=max(1, round(d * preset.num_k_clusters)), min_kc_ratio=0.0))
        if align_q_tile:
            methods[f"svg2_d{d:g}_a{align_q_tile}"] = ("svg2", dict(methods[f"svg2_d{d:g}"][1],
                                                                    align_q_tile=align_q_tile))
    if "svg2" in presets:
        methods["svg2_preset"] = ("svg2", dict(asdict(preset), **common))
    if "positional" in presets:  # the same budget and warm-up over fixed 128-token blocks
        budget = {k: getattr(preset, k) for k in ("top_p", "min_kc_ratio", "dense_steps", "dense_layers")}
        methods["positional_preset"] = ("positional", dict(common, block_size=block_size, **budget))
    for name in others:
        methods[f"{name}_preset"] = (name, dict(method_preset(name, shape.name), **common))
    return methods


def time_method(model, inputs, name: str, config: dict, clock: Clock, repeats: int, steps: int,
                ranks: Ranks = Ranks()) -> dict:
    """Warm-up forward, then the cold first sparse step and ``repeats`` warm steps of one generation."""
    method = build_method(name, **config)
    apply(model, method, parallel=ranks.ulysses)

    def forward() -> float:
        start = clock.mark()
        with torch.no_grad():
            out = model(**inputs, return_dict=False)[0]
        ms = clock.ms(start, clock.mark())
        finite.append(bool(torch.isfinite(out).all()))
        return ms

    def new_generation():
        method.reset(num_steps=steps)
        method.set_step(steps - 1)  # a step past any dense warm-up

    finite: list[bool] = []
    try:
        new_generation()
        forward()  # compile kernels, pick backends
        new_generation()
        cold = forward()
        warm = []
        for _ in range(repeats):
            method.stats.clear()
            warm.append(forward())
        calls = ranks.whole_calls([s.as_row() for s in method.stats])  # the last step's self-attention calls
    finally:
        remove(model)
    return dict(ms_cold=cold, ms_step=statistics.median(warm), ms_step_min=min(warm), finite=all(finite),
                calls=calls, ms_step_ranks=ranks.gather(statistics.median(warm)))


def summarise(label: str, name: str, result: dict, dense: dict | None, shape: ModelShape, steps: int,
              warmup_fraction: float) -> dict:
    calls = result["calls"]
    attn = sum(sum(v for k, v in c.items() if k.startswith("ms_")) for c in calls)
    row = dict(method=label, method_name=name, ms_step=result["ms_step"], ms_step_min=result["ms_step_min"],
               ms_cold=result["ms_cold"], ms_self_attention=attn, ms_other=result["ms_step"] - attn,
               density=statistics.fmean(c["density"] for c in calls), finite=result["finite"],
               ms_step_ranks=result.get("ms_step_ranks"))
    for stage in STAGES:
        row[f"ms_{stage}"] = sum(c.get(f"ms_{stage}", 0.0) for c in calls)
    if dense is not None:  # the fastest dense run: ceiling and speedups
        dense_attn = [sum(v for k, v in c.items() if k.startswith("ms_")) for c in dense["calls"]]
        other = dense["ms_step"] - sum(dense_attn)
        row["ms_ceiling"] = other + sum(c["density"] * a for c, a in zip(calls, dense_attn))
        row["ceiling_fraction"] = row["ms_ceiling"] / row["ms_step"]
        row["speedup_step"] = dense["ms_step"] / row["ms_step"]
        row["speedup_ceiling"] = dense["ms_step"] / row["ms_ceiling"]
        dense_steps = math.ceil(warmup_fraction * steps) if name != "dense" else steps
        sparse_steps = steps - dense_steps
        gen = dense_steps * dense["ms_step"] + (result["ms_cold"] + (sparse_steps - 1) * result["ms_step"]
                                                 if sparse_steps else 0.0)
        row["ms_generation"] = shape.cfg_branches * gen
        row["speedup_generation"] = shape.cfg_branches * steps * dense["ms_step"] / row["ms_generation"]
    return row


def bench_model(shape: ModelShape, args, device, dtype, clock: Clock, ranks: Ranks = Ranks()):
    """Yields one row per method: the dense runs first (the baseline), then each sparse run as it finishes."""
    model = build_transformer(shape, device, dtype)
    inputs = transformer_inputs(shape, device, dtype)
    methods = bench_methods(shape, args.densities, args.dense_backends, args.presets, args.align_q_tile,
                            getattr(args, "methods", ()))
    base = dict(shape=shape.name, layers=shape.layers, tokens=shape.video_tokens, text_tokens=shape.text_tokens,
                cfg_branches=shape.cfg_branches, dtype=str(dtype).replace("torch.", ""), steps=args.steps,
                warmup_fraction=args.warmup_fraction, repeats=args.repeats, timer=clock.label,
                world_size=ranks.world_size)

    def run(label, name, config):
        try:
            return time_method(model, inputs, name, config, clock, args.repeats, args.steps, ranks)
        except Exception as e:  # e.g. a dense backend this device lacks: recorded, not fatal
            print(f"{shape.name} {label}: {type(e).__name__}: {e}")
            return e

    def row(label, name, config, result, fastest, dense_runs):
        shown = str({k: v for k, v in config.items() if k != "profile"})
        if isinstance(result, Exception):
            return dict(base, method=label, method_name=name, error=f"{type(result).__name__}: {result}", config=shown)
        r = summarise(label, name, result, fastest, shape, args.steps, args.warmup_fraction)
        for other, d in dense_runs.items():  # speedups against every dense backend, the fastest in speedup_step
            r[f"speedup_vs_{other}"] = d["ms_step"] / r["ms_step"]
        return dict(base, **r, config=shown)

    dense = {label: (name, config, run(label, name, config)) for label, (name, config) in methods.items()
             if name == "dense"}
    dense_runs = {label: r for label, (_, _, r) in dense.items() if not isinstance(r, Exception)}
    fastest = min(dense_runs.values(), key=lambda r: r["ms_step"]) if dense_runs else None
    for label, (name, config, result) in dense.items():
        yield row(label, name, config, result, fastest, dense_runs)
    for label, (name, config) in methods.items():
        if name != "dense":
            yield row(label, name, config, run(label, name, config), fastest, dense_runs)
    del model
    if clock.cuda:
        torch.cuda.empty_cache()


def parse_layers(text: str | None, names: list[str]) -> dict[str, int]:
    """'8' -> every shape 8 blocks; 'wan_t2v_14b_720p=8,hunyuan_720p=3' -> those shapes only."""
    if not text:
        return {}
    if "=" not in text:
        return {n: int(text) for n in names}
    pairs = dict(item.split("=") for item in text.split(","))
    unknown = sorted(set(pairs) - set(names))
    if unknown:
        raise SystemExit(f"--layers names {unknown}; expected some of the benchmarked shapes {names}")
    return {n: int(v) for n, v in pairs.items()}


def plot(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys(df["shape"]))
    fig, axes = plt.subplots(1, len(shapes), figsize=(5.5 * len(shapes), 4.2), squeeze=False)
    for ax, name in zip(axes[0], shapes):
        d = df[(df["shape"] == name) & df["ms_step"].notna()]
        x = range(len(d))
        ax.bar(x, d["ms_step"] / 1e3, color=["#888" if m == "dense" else "#3a7" for m in d["method_name"]],
               label="measured step")
        if "ms_ceiling" in d:
            ax.scatter(x, d["ms_ceiling"] / 1e3, marker="_", s=400, color="k", zorder=3, label="Amdahl ceiling")
        for i, (_, r) in enumerate(d.iterrows()):
            ax.text(i, r["ms_step"] / 1e3, f"{r['density']:.2f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(list(x), d["method"], rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{name} ({int(d['layers'].iloc[0])} layers, {d['timer'].iloc[0]})", fontsize=9)
        ax.set_ylabel("transformer forward (s)")
        ax.legend(fontsize=7)
    fig.suptitle("One transformer forward per method (labels: density)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pick_shapes(text: str | None, toy: bool) -> list[ModelShape]:
    if toy:
        names = text.split(",") if text else list(TOY)
        unknown = [n for n in names if n not in TOY]
        if unknown:
            raise SystemExit(f"--shapes {unknown} with --toy: expected some of {sorted(TOY)}")
        return [TOY[n] for n in names]
    try:
        return parse_shapes(text or DEFAULT_SHAPES)
    except ValueError as err:
        raise SystemExit(f"--shapes: {err}")


def main(argv=None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--toy", action="store_true", help="toy sizes in float32 on the CPU (or the GPU if present)")
    p.add_argument("--shapes", default=None,
                   help=f"comma-separated eval.shapes names (default {DEFAULT_SHAPES}; toy: {sorted(TOY)})")
    p.add_argument("--layers", default=None,
                   help="transformer blocks: N for every shape, or shape=N,... (default: the real count)")
    p.add_argument("--densities", default="0.3,0.15", help="fixed densities for positional and svg2 (top-k budgets)")
    p.add_argument("--dense-backends", default=None, help="default cudnn,flash on CUDA; auto on the CPU")
    p.add_argument("--presets", default="svg2,positional", help="upstream top-p presets to run (svg2, positional)")
    p.add_argument("--methods", default="", help="more methods at their release presets, e.g. sta,draft,svg1")
    p.add_argument("--align-q-tile", type=int, default=0,
                   help="also run svg2 at each density with query clusters aligned to this many rows "
                        "(64: the kernel's tile)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup-fraction", type=float, default=0.2, help="dense steps of a sparse generation")
    p.add_argument("--out", default="results/bench/e2e_h200.csv")
    args = p.parse_args(argv)
    shapes = pick_shapes(args.shapes, args.toy)
    cuda = torch.cuda.is_available()
    if not args.toy and not cuda:
        raise SystemExit("the real configurations need a CUDA device; use --toy on the CPU")
    device, dtype = ("cuda", torch.bfloat16) if cuda and not args.toy else (("cuda" if cuda else "cpu"), torch.float32)
    ranks = Ranks()
    if launched():  # torchrun: every method over all ranks, rank r on cuda:r
        world = int(os.environ["WORLD_SIZE"])
        device = rank_device(device, world)
        if device.startswith("cuda"):
            torch.cuda.set_device(device)
        ranks = Ranks.join(world, device)
    args.densities = [float(d) for d in args.densities.split(",") if d]
    args.presets = [x for x in args.presets.split(",") if x]
    args.methods = [x for x in args.methods.split(",") if x]
    args.dense_backends = (args.dense_backends.split(",") if args.dense_backends
                           else (["cudnn", "flash"] if device == "cuda" else ["auto"]))
    clock = Clock(device)
    writer = RowWriter(args.out if ranks.writer else None)  # rewritten after every row: a timeout keeps the rest
    layers = parse_layers(args.layers, [s.name for s in shapes])
    for shape in shapes:
        for row in bench_model(with_layers(shape, layers.get(shape.name)), args, device, dtype, clock, ranks):
            writer.add(row)
    df = writer.frame()
    if not ranks.writer:
        return df
    plot(df, Path(args.out).with_suffix(".png"))
    cols = [c for c in ("shape", "method", "density", "ms_step", "ms_ceiling", "ceiling_fraction", "speedup_step",
                        "speedup_generation") if c in df]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return df


if __name__ == "__main__":
    main()
