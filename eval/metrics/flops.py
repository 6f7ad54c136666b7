"""Analytic FLOPs account of one video generation: self-attention at the measured density, every other
transformer op dense (projections, cross-attention, MLP), dense warm-up steps and layers counted dense.
The text encoder and the VAE are not counted (the same for every method).

Per layer and CFG branch, with N video tokens, L conditioning tokens, width d = heads·head_dim, MLP width f
(a multiply-add is 2 FLOPs):

- cross-attention models (Wan, Wan I2V with extra image tokens):
  self-attn 8Nd² + 4N²d·density, cross-attn 4Nd² + 4Ld² + 4NLd, MLP 4Ndf
- joint-attention models (HunyuanVideo, CogVideoX; text tokens inside the self-attention):
  projections 8(N+L)d², attention 4d((N+L)² - N² + N²·density), MLP 4(N+L)df

    python -m eval.metrics.flops wan_t2v_14b_720p --density 0.15 --dense-steps 0.2 --dense-layers 1
"""
from __future__ import annotations

import argparse
import math
from dataclasses import replace

from eval.shapes import SHAPES, ModelShape, latent_tokens  # noqa: F401  (latent_tokens: eval.models reads it here)


def layer_flops(shape: ModelShape, density: float = 1.0) -> tuple[float, float]:
    """(self-attention core FLOPs at ``density``, all other FLOPs) of one layer, one branch."""
    n, l, d, f = shape.video_tokens, shape.text_tokens, shape.width, shape.mlp_dim
    if shape.joint:
        t = n + l
        return 4 * d * (t * t - n * n + n * n * density), 8 * t * d * d + 4 * t * d * f
    c = l + shape.image_tokens
    return 4 * n * n * d * density, 8 * n * d * d + 4 * n * d * d + 4 * c * d * d + 4 * n * c * d + 4 * n * d * f


def dense_calls(shape: ModelShape, dense_steps: float = 0, dense_layers: int = 0) -> int:
    """Self-attention calls run dense by the warm-up policy (a fractional dense_steps is of shape.steps)."""
    steps = math.ceil(dense_steps * shape.steps) if 0 < dense_steps < 1 else int(dense_steps)
    steps, layers = min(steps, shape.steps), min(dense_layers, shape.layers)
    per_branch = steps * shape.layers + (shape.steps - steps) * layers
    return per_branch * shape.cfg_branches


def flops_account(shape: ModelShape, density: float = 1.0, dense_steps: float = 0, dense_layers: int = 0) -> dict:
    """The paper's columns for a configuration: sparse calls at ``density``, warm-up calls dense.

    Returns PFLOPs of the generation (dense and at this configuration), their ratio and the overall
    attention density (over every self-attention call, warm-up included)."""
    if not 0 <= density <= 1:
        raise ValueError(f"density={density!r}; expected a fraction in [0, 1]")
    calls = shape.steps * shape.layers * shape.cfg_branches
    n_dense = dense_calls(shape, dense_steps, dense_layers)
    attn_full, other = layer_flops(shape, 1.0)
    attn_sparse, _ = layer_flops(shape, density)
    total_dense = calls * (attn_full + other)
    total = n_dense * attn_full + (calls - n_dense) * attn_sparse + calls * other
    return dict(model=shape.name, tokens=shape.video_tokens, calls=calls, dense_calls=n_dense,
                density=(n_dense + (calls - n_dense) * density) / calls,
                pflops=total / 1e15, pflops_dense=total_dense / 1e15, flops_ratio=total / total_dense)


def flops_from_stats(shape: ModelShape, densities: list[float]) -> dict:
    """FLOPs of a measured generation: one self-attention density per call (dense calls are 1.0)."""
    if not densities:
        raise ValueError("no attention calls recorded; expected one density per self-attention call")
    _, other = layer_flops(shape, 1.0)
    attn_full = layer_flops(shape, 1.0)[0]
    total = sum(layer_flops(shape, d)[0] for d in densities) + len(densities) * other
    total_dense = len(densities) * (attn_full + other)
    return dict(calls=len(densities), density=sum(densities) / len(densities), flops=total,
                flops_dense=total_dense, flops_ratio=total / total_dense)


def main() -> None:
    ap = argparse.ArgumentParser(description="Print the FLOPs and density columns of a configuration.")
    ap.add_argument("model", choices=sorted(SHAPES))
    ap.add_argument("--density", type=float, nargs="+", default=[1.0], help="sparse-call attention density")
    ap.add_argument("--dense-steps", type=float, default=0)
    ap.add_argument("--dense-layers", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args()
    shape = SHAPES[args.model]
    if args.steps is not None:
        shape = replace(shape, steps=args.steps)
    print("| model | tokens | sparse density | overall density | PFLOPs | dense PFLOPs | ratio |")
    print("|---|---|---|---|---|---|---|")
    for d in args.density:
        r = flops_account(shape, d, args.dense_steps, args.dense_layers)
        print(f"| {r['model']} | {r['tokens']} | {d:.3f} | {r['density']:.3f} | {r['pflops']:.1f} | "
              f"{r['pflops_dense']:.1f} | {r['flops_ratio']:.3f} |")


if __name__ == "__main__":
    main()
