"""Attention-output error of svg2 vs positional blocks at equal density, on the default model's own layers.

    python -m eval.default_model.attention_error --out eval/default_model/attention_error.csv

Generates one default clip with dense attention while recording the self-attention inputs (after QK-norm and
RoPE) of every layer at a few denoising steps (conditional branch), then runs each method on those inputs
over a sweep of ``top_p`` (``min_kc_ratio`` 0, so the budget alone sets density) and reports the relative L2
error of the output against dense attention together with the density of each call. Equal density is
read off by interpolating each method's error against log-density.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from eval.metrics.attention import relative_l2
from svg2.methods import DenseMethod, build_method

TOP_P = (0.3, 0.5, 0.7, 0.9, 0.97, 0.99)
STEPS = (4, 10)  # of 16: after the dense warm-up upstream uses (20-30%), and late
DENSITIES = (0.1, 0.2, 0.3, 0.4, 0.5)


def methods(top_p: float) -> dict:
    """Method configs compared at one budget; granularity is matched (64-token query groups)."""
    budget = dict(top_p=top_p, min_kc_ratio=0.0)
    return {
        "svg2 QC64 KC256": ("svg2", dict(num_q_clusters=64, num_k_clusters=256, **budget)),
        # query clusters moved to multiples of 16 rows: ~4 tiles per cluster, as 64-row tiles at Wan 720p (QC 300)
        "svg2 QC64 KC256 align16": ("svg2", dict(num_q_clusters=64, num_k_clusters=256, align_q_tile=16, **budget)),
        "positional 64": ("positional", dict(block_size=64, **budget)),
        "positional tile 1x8x8": ("positional", dict(tile=(1, 8, 8), **budget)),
    }


class Recorder(DenseMethod):
    """Dense attention that keeps the inputs of chosen steps: {(step, layer, branch): (q, k, v, grid)}."""

    name = "dense"

    def __init__(self, steps, **kw):
        super().__init__(**kw)
        self.keep_steps, self.calls = set(steps), {}

    def __call__(self, q, k, v, *, layer=0, branch=0, step=None, grid=None):
        step = self.state.step if step is None else step
        if step in self.keep_steps and branch == 0:
            self.calls[(step, layer, branch)] = tuple(t.detach().float().cpu().clone() for t in (q, k, v)) + (grid,)
        return super().__call__(q, k, v, layer=layer, branch=branch, step=step, grid=grid)


def record(model_dir: Path, seed: int, steps=STEPS) -> dict:
    from svg2.diffusers import apply, load_pipeline, remove

    from eval.default_model.components import generation_kwargs, load_model_config

    cfg = load_model_config(model_dir)
    pipe = load_pipeline("wan_t2v", model_dir)
    recorder = Recorder(steps)
    apply(pipe, recorder)
    prompt = cfg.spec(seed).prompt
    pipe(prompt=prompt, generator=torch.Generator().manual_seed(seed), output_type="latent",
         **generation_kwargs(cfg))
    remove(pipe)
    if not recorder.calls:
        raise RuntimeError(f"no self-attention call was recorded at steps {sorted(steps)}")
    return recorder.calls


def sweep(calls: dict) -> pd.DataFrame:
    rows = []
    for (step, layer, branch), (q, k, v, grid) in sorted(calls.items()):
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        for top_p in TOP_P:
            for label, (name, config) in methods(top_p).items():
                method = build_method(name, **config)
                out = method(q, k, v, layer=layer, branch=branch, grid=grid)
                rows.append(dict(method=label, top_p=top_p, step=step, layer=layer, tokens=q.shape[2],
                                 density=method.stats[-1].as_row()["density"], rel_l2=relative_l2(ref, out)))
    return pd.DataFrame(rows)


def at_equal_density(df: pd.DataFrame, densities=DENSITIES) -> pd.DataFrame:
    """Mean error of each method at given densities, interpolated in log-density over the top_p sweep."""
    curve = df.groupby(["method", "top_p"])[["density", "rel_l2"]].mean().reset_index()
    out = {}
    for label, g in curve.groupby("method"):
        g = g.sort_values("density")
        x, y = np.log(g["density"].to_numpy()), g["rel_l2"].to_numpy()
        out[label] = [float(np.interp(np.log(d), x, y)) if x[0] <= np.log(d) <= x[-1] else float("nan")
                      for d in densities]
    return pd.DataFrame(out, index=pd.Index(densities, name="density"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(Path(__file__).parent / "model"))
    p.add_argument("--seed", type=int, default=30_000_000)
    p.add_argument("--out", default=None, help="CSV of every call (method, top_p, step, layer, density, rel_l2)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    df = sweep(record(Path(args.model), args.seed))
    if args.out:
        df.to_csv(args.out, index=False, float_format="%.5g")
    pd.set_option("display.width", 160)
    print(df.groupby(["method", "top_p"])[["density", "rel_l2"]].mean().round(4).to_string())
    print("\nrelative L2 error at equal density (interpolated):")
    print(at_equal_density(df).round(4).to_string())
    print(f"\n{len(df)} calls, {time.perf_counter() - t0:.0f} s on {torch.get_num_threads()} CPU threads")


if __name__ == "__main__":
    main()
