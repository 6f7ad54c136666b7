"""FLOPs account of one video generation: self-attention at the measured density, every other transformer op
dense (projections, cross-attention, MLP), dense warm-up steps and layers counted dense.

Two columns. Transformer-only (the default, ``flops_account``): the analytic formula below, the same for every
method. Whole pipeline (``eval.metrics.pipeline_flops``): the transformer, text encoder(s), image encoder and
VAE counted by torch's FLOP counter on the meta device, self-attention still analytic at the density.

Per layer and CFG branch, with N video tokens, L conditioning tokens, width d = heads·head_dim, MLP width f
(a multiply-add is 2 FLOPs):

- cross-attention models (Wan, Wan I2V with extra image tokens):
  self-attn 8Nd² + 4N²d·density, cross-attn 4Nd² + 4Ld² + 4NLd, MLP 4Ndf
- joint-attention models (HunyuanVideo, CogVideoX; text tokens inside the self-attention):
  projections 8(N+L)d², attention 4d((N+L)² - N² + N²·density), MLP 4(N+L)df

Here ``density`` is that of the video-video pairs (prompt pairs stay dense). A method's measured per-call
density is over every pair of its call, prompt tokens included (``flops_from_stats`` takes those).

Against the paper's dense column (Wan T2V 14B 720p 658.46, Wan I2V 14B 720p 526.76, HunyuanVideo 720p 612.38
PFLOPs) the transformer-only column is 0.93 / 0.67 / 1.46 % lower and the whole pipeline 0.83 / 0.47 / 0.97 %.
The paper uses its own formula (``paper_account``, which reproduces the column to 0.001 %): linear layers as
24·s·d² per layer (an MLP 4d wide where Wan's is 2.7d, no cross-attention, prompt or image-token terms),
HunyuanVideo's 119,056 attention tokens rounded to 120,000, and nothing per video (encoders, VAE); its Wan I2V
column is 40 steps of the T2V step.

    python -m eval.metrics.flops wan_t2v_14b_720p --density 0.15 --dense-steps 0.2 --dense-layers 1
    python -m eval.metrics.flops wan_t2v_14b_720p --density 0.25 --fit 658.46 300   # warm-up behind a paper row
"""
from __future__ import annotations

import argparse
from dataclasses import replace

from eval.shapes import SHAPES, ModelShape
from svg2.methods.base import dense_step_count


def layer_flops(shape: ModelShape, density: float = 1.0) -> tuple[float, float]:
    """(self-attention core FLOPs at video-pair ``density``, all other FLOPs) of one layer, one branch."""
    n, l, d, f = shape.video_tokens, shape.text_tokens, shape.width, shape.mlp_dim
    if shape.joint:
        t = shape.attention_tokens
        return 4 * d * (t * t - n * n + n * n * density), 8 * t * d * d + 4 * t * d * f
    c = l + shape.image_tokens
    return 4 * n * n * d * density, 8 * n * d * d + 4 * n * d * d + 4 * c * d * d + 4 * n * c * d + 4 * n * d * f


def measured_attention_flops(shape: ModelShape, density: float) -> float:
    """Self-attention core FLOPs of one call at the density a method reports for it: kept pairs over every pair
    of the call (a joint model's prompt pairs included, so they are not added again)."""
    t = shape.attention_tokens
    return 4 * shape.width * t * t * density


def measured_core(shape: ModelShape, densities: list[float]) -> float:
    """Self-attention core FLOPs of a measured generation, one density per call (``measured_attention_flops``)."""
    return sum(measured_attention_flops(shape, d) for d in densities)


def check_density(density: float) -> None:
    if not 0 <= density <= 1:
        raise ValueError(f"density={density!r}; expected a fraction in [0, 1]")


def warmup_steps(shape: ModelShape, dense_steps: float) -> int:
    """Dense warm-up steps: a fraction in (0, 1) of shape.steps (rounded up, as the methods do), or a count."""
    if dense_steps < 0 or (dense_steps >= 1 and not float(dense_steps).is_integer()) or dense_steps > shape.steps:
        raise ValueError(f"dense_steps={dense_steps!r}; expected a fraction in [0, 1) or a whole number of steps "
                         f"up to the {shape.steps} of {shape.name}")
    return int(dense_step_count(dense_steps, shape.steps))


def dense_calls(shape: ModelShape, dense_steps: float = 0, dense_layers: int = 0) -> int:
    """Self-attention calls run dense by the warm-up policy."""
    if isinstance(dense_layers, bool) or int(dense_layers) != dense_layers or not 0 <= dense_layers <= shape.layers:
        raise ValueError(f"dense_layers={dense_layers!r}; expected a whole number from 0 to the {shape.layers} "
                         f"layers of {shape.name}")
    steps = warmup_steps(shape, dense_steps)
    per_branch = steps * shape.layers + (shape.steps - steps) * int(dense_layers)
    return per_branch * shape.cfg_branches


def attention_core(shape: ModelShape, density: float, dense_steps: float = 0,
                   dense_layers: int = 0) -> tuple[int, float]:
    """(self-attention calls run dense by the warm-up policy, self-attention core FLOPs of the generation: those
    calls dense, the others at video-pair ``density``)."""
    n_dense = dense_calls(shape, dense_steps, dense_layers)
    full, sparse = layer_flops(shape, 1.0)[0], layer_flops(shape, density)[0]
    return n_dense, n_dense * full + (shape.attention_calls - n_dense) * sparse


def flops_account(shape: ModelShape, density: float = 1.0, dense_steps: float = 0, dense_layers: int = 0) -> dict:
    """The paper's columns for a configuration: sparse calls at ``density``, warm-up calls dense.

    Returns PFLOPs of the generation (dense and at this configuration), their ratio and the overall
    attention density (over every self-attention call, warm-up included)."""
    check_density(density)
    calls = shape.attention_calls
    n_dense, core = attention_core(shape, density, dense_steps, dense_layers)
    attn_full, other = layer_flops(shape, 1.0)
    total_dense = calls * (attn_full + other)
    total = core + calls * other
    return dict(model=shape.name, tokens=shape.video_tokens, calls=calls, dense_calls=n_dense,
                density=(n_dense + (calls - n_dense) * density) / calls,
                pflops=total / 1e15, pflops_dense=total_dense / 1e15, flops_ratio=total / total_dense)


def flops_from_stats(shape: ModelShape, densities: list[float]) -> dict:
    """FLOPs of a measured generation: one self-attention density per call as the method reports it (dense
    calls are 1.0)."""
    if not densities:
        raise ValueError("no attention calls recorded; expected one density per self-attention call")
    attn_full, other = layer_flops(shape, 1.0)
    total = measured_core(shape, densities) + len(densities) * other
    total_dense = len(densities) * (attn_full + other)
    return dict(calls=len(densities), density=sum(densities) / len(densities), flops=total,
                flops_dense=total_dense, flops_ratio=total / total_dense)


# The paper's own formula (arXiv 2505.18875's FLOPs column, as its authors gave it in svg-project/Sparse-VideoGen
# issue #22): per layer and transformer call 2·s·12d² for the linear layers (12d² weights, no cross-attention,
# prompt or image terms) plus 4·d·s² at an equivalent density, dense warm-up steps folded in as
# warmup + (1 - warmup)·density. s is the self-attention sequence; for HunyuanVideo the authors used 120,000.
PAPER_TOKENS = {"hunyuan_720p": 120_000}


def _paper_terms(shape: ModelShape) -> tuple[float, float]:
    """(linear, dense attention) FLOPs of a whole generation under the paper's formula."""
    s, d = PAPER_TOKENS.get(shape.name, shape.attention_tokens), shape.width
    calls = shape.attention_calls
    return calls * 24 * s * d * d, calls * 4 * d * s * s


def paper_account(shape: ModelShape, density: float = 1.0, dense_steps: float = 0, dense_layers: int = 0) -> dict:
    """PFLOPs of a generation as the paper counts them (dense, and with sparse calls at ``density``)."""
    check_density(density)
    dense_share = dense_calls(shape, dense_steps, dense_layers) / shape.attention_calls
    linear, attention = _paper_terms(shape)
    total = linear + attention * (dense_share + (1 - dense_share) * density)
    return dict(pflops=total / 1e15, pflops_dense=(linear + attention) / 1e15)


def fit_dense_steps(shape: ModelShape, density: float, dense_pflops: float, sparse_pflops: float,
                    dense_layers: int = 0) -> float:
    """Dense warm-up steps (fractional) under which the paper's formula turns a table's dense PFLOPs into its
    sparse PFLOPs at ``density``. Only the attention term differs between the two, so it alone decides."""
    check_density(density)
    if density == 1:
        raise ValueError("density=1 saves nothing, so no warm-up can be read off; expected a density below 1")
    _, attention = _paper_terms(shape)
    equivalent = 1 - (dense_pflops - sparse_pflops) * 1e15 / attention
    dense_share = (equivalent - density) / (1 - density)  # of all calls
    layer_share = dense_layers / shape.layers
    return shape.steps * (dense_share - layer_share) / (1 - layer_share)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Print the FLOPs and density columns of a configuration.")
    ap.add_argument("model", choices=sorted(SHAPES))
    ap.add_argument("--density", type=float, nargs="+", default=[1.0], help="sparse-call attention density")
    ap.add_argument("--dense-steps", type=float, default=0,
                    help="dense warm-up: a fraction of the steps in [0, 1) or a number of steps")
    ap.add_argument("--dense-layers", type=int, default=0, help="first layers dense on every step")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default: the shape's)")
    ap.add_argument("--transformer-only", action="store_true", help="skip the whole-pipeline count (~10 s)")
    ap.add_argument("--fit", type=float, nargs=2, metavar=("DENSE", "SPARSE"),
                    help="a paper table's dense and sparse PFLOPs: print the dense warm-up steps that turn one into "
                         "the other under the paper's formula at each --density, for 0 and 1 dense layers")
    args = ap.parse_args(argv)
    shape = SHAPES[args.model]
    if args.steps is not None:
        if args.steps < 1:
            ap.error(f"--steps {args.steps}: expected at least 1")
        shape = replace(shape, steps=args.steps)
    try:  # the checks the accounts make, as usage errors before any is made
        for d in args.density:
            check_density(d)
        dense_calls(shape, args.dense_steps, args.dense_layers)
    except ValueError as err:
        ap.error(str(err))
    if args.fit:
        print("| model | sparse density | dense layers | dense steps | of the steps |")
        print("|---|---|---|---|---|")
        for d in args.density:
            for layers in (0, 1):
                s = fit_dense_steps(shape, d, *args.fit, dense_layers=layers)
                print(f"| {shape.name} | {d:.3f} | {layers} | {s:.2f} | {s / shape.steps:.3f} |")
        return
    whole = None
    if not args.transformer_only:
        from eval.metrics.pipeline_flops import pipeline_account

        whole = [pipeline_account(shape, d, args.dense_steps, args.dense_layers) for d in args.density]
    print("| model | tokens | sparse density | overall density | PFLOPs | dense PFLOPs | ratio |"
          + (" pipeline PFLOPs | pipeline dense |" if whole else "") + " paper formula | paper dense |")
    print("|---|---|---|---|---|---|---|" + ("---|---|" if whole else "") + "---|---|")
    for i, d in enumerate(args.density):
        r = flops_account(shape, d, args.dense_steps, args.dense_layers)
        line = (f"| {r['model']} | {r['tokens']} | {d:.3f} | {r['density']:.3f} | {r['pflops']:.2f} | "
                f"{r['pflops_dense']:.2f} | {r['flops_ratio']:.3f} |")
        if whole:
            line += f" {whole[i]['pflops']:.2f} | {whole[i]['pflops_dense']:.2f} |"
        paper = paper_account(shape, d, args.dense_steps, args.dense_layers)
        print(line + f" {paper['pflops']:.2f} | {paper['pflops_dense']:.2f} |")
    if whole:
        parts = ", ".join(f"{k} {v:.4g}" for k, v in whole[-1]["parts_pflops"].items())
        print(f"\nwhole pipeline at density {args.density[-1]:g}, PFLOPs: {parts}")


if __name__ == "__main__":
    main()
