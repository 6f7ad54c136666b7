"""Pareto frontiers of a results folder: quality (PSNR, SSIM, LPIPS, attention error) against cost
(speedup, density, FLOPs). Rows are first averaged per method configuration over prompts and seeds.

    from eval.frontier import load_configs, pareto_mask, plot_frontiers
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from eval.results import atomic_write, load_results

HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False, "lpips_vgg": False, "rel_l2": False,
                    "cos_err": False, "density": False, "sparse_density": False, "flops_ratio": False,
                    "speedup_e2e": True, "speedup_step": True, "speedup_attn": True}
LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS (AlexNet)", "lpips_vgg": "LPIPS (VGG)",
          "rel_l2": "relative L2 error", "cos_err": "cosine error", "density": "attention density",
          "sparse_density": "density of sparse calls", "flops_ratio": "FLOPs / dense FLOPs",
          "speedup_e2e": "end-to-end speedup", "speedup_step": "per-step speedup", "speedup_attn": "attention speedup"}
GROUP = ["sweep", "model", "workload", "hardware", "method", "config_key"]


def axis_label(metric: str, timer: str | None = None) -> str:
    label = LABELS.get(metric, metric)
    if metric.startswith("speedup") and timer == "cpu_wall":  # CPU timings are never called speedups
        label = label.replace("speedup", "dense time / time (CPU wall clock)")
    return label


def load_configs(folder) -> pd.DataFrame:
    """One row per method configuration (and model, workload, hardware): metrics averaged over rows."""
    df = load_results(folder)
    if "status" in df:
        df = df[df["status"] == "ok"]
    if df.empty:
        return df
    group = [c for c in GROUP if c in df] + ([] if "config_key" in df else ["label"])
    groups = df.groupby(group, dropna=False, sort=True)
    numeric = [c for c in df.columns if c not in group and pd.api.types.is_numeric_dtype(df[c])
               and not c.startswith("method.")]
    agg = groups[numeric].mean().reset_index()
    agg["rows"] = groups.size().values
    for col in ["label", "timer", *[c for c in df.columns if c.startswith("method.")]]:
        if col in df and col not in group:
            agg[col] = groups[col].first().values
    return _unique_labels(agg)


def _unique_labels(agg: pd.DataFrame) -> pd.DataFrame:
    """Configurations that share a label get the method values that tell them apart appended."""
    if "config_key" not in agg:
        return agg
    for label, part in agg.groupby("label"):
        if part["config_key"].nunique() < 2:
            continue
        varying = [c for c in part.columns if c.startswith("method.") and part[c].astype(str).nunique() > 1]
        for i, row in part.iterrows():
            agg.loc[i, "label"] = label + " " + " ".join(f"{c[len('method.'):]}={row[c]}" for c in varying)
    return agg


def pareto_mask(x, y, x_higher: bool, y_higher: bool) -> np.ndarray:
    """True for the points no other point dominates (at least as good on both axes, better on one).
    Points with a missing (NaN) coordinate are never on the frontier; inf (exact PSNR) is a value."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    xs, ys = (x if x_higher else -x), (y if y_higher else -y)
    ok = ~np.isnan(xs) & ~np.isnan(ys)  # inf is a value (dense PSNR), NaN is missing
    mask = np.zeros(len(x), dtype=bool)
    for i in np.flatnonzero(ok):
        dominated = ok & (xs >= xs[i]) & (ys >= ys[i]) & ((xs > xs[i]) | (ys > ys[i]))
        mask[i] = not dominated.any()
    return mask


def frontier_table(configs: pd.DataFrame, quality: str, cost: str) -> pd.DataFrame:
    """Every configuration with its quality/cost and whether it is on the (all-method) frontier."""
    extra = ("density", "flops_ratio", "speedup_e2e", "speedup_attn", "rows")
    cols = [c for c in ("method", "label", quality, cost, *extra) if c in configs and configs[c].notna().any()]
    table = configs[list(dict.fromkeys(cols))].copy()
    if quality in configs and cost in configs:
        table["frontier"] = pareto_mask(configs[cost], configs[quality], HIGHER_IS_BETTER.get(cost, True),
                                        HIGHER_IS_BETTER.get(quality, True))
        table = table.sort_values(cost, ascending=not HIGHER_IS_BETTER.get(cost, True))
    return table.reset_index(drop=True)


def plot_frontiers(configs: pd.DataFrame, quality: list[str], cost: list[str], path, title: str = "") -> Path:
    """One subplot per (quality, cost) pair: every configuration as a point, each method's own frontier as
    a line, dense (the reference) as a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quality = [q for q in quality if q in configs and configs[q].notna().any()]
    cost = [c for c in cost if c in configs and configs[c].notna().any()]
    if not quality or not cost:
        raise ValueError(f"no plottable axes: quality {quality}, cost {cost} among columns {sorted(configs.columns)}")
    timer = configs["timer"].iloc[0] if "timer" in configs else None
    fig, axes = plt.subplots(len(quality), len(cost), figsize=(4.2 * len(cost), 3.4 * len(quality)), squeeze=False)
    colours = {m: f"C{i}" for i, m in enumerate(sorted(configs["method"].unique()))}
    for (qi, q), (ci, c) in ((a, b) for a in enumerate(quality) for b in enumerate(cost)):
        ax = axes[qi][ci]
        for method, part in configs.groupby("method"):
            part = part[part[c].notna()]
            if method == "dense":
                y = part[q].replace([np.inf, -np.inf], np.nan).fillna(_top(configs[q], q))
                ax.scatter(part[c], y, marker="*", s=140, color="k", label="dense (exact)", zorder=3)
                continue
            ax.scatter(part[c], part[q], color=colours[method], label=method, alpha=0.8)
            front = part[pareto_mask(part[c], part[q], HIGHER_IS_BETTER.get(c, True), HIGHER_IS_BETTER.get(q, True))]
            front = front.sort_values(c)
            ax.plot(front[c], front[q], color=colours[method], lw=1.5)
        ax.set_xlabel(axis_label(c, timer))
        ax.set_ylabel(axis_label(q, timer))
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), bbox_to_anchor=(0.5, 1.0))
    if title:
        fig.suptitle(title, y=1.04)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buf.getvalue())  # two reports of one folder at once never share a temporary file
    return path


def _top(values: pd.Series, metric: str) -> float:
    """Where dense (exact, e.g. PSNR = inf) is drawn: just past the best finite value."""
    finite = values[np.isfinite(values.astype(float))]
    if finite.empty:
        return 0.0
    span = (finite.max() - finite.min()) or abs(finite.max()) or 1.0
    return finite.max() + 0.1 * span if HIGHER_IS_BETTER.get(metric, True) else finite.min() - 0.1 * span


def report(folder, frontier_cfg) -> tuple[Path, str]:
    """Write ``frontier.png`` and ``frontier.md`` into a results folder; print the table and the plot path."""
    folder = Path(folder)
    configs = load_configs(folder)
    if configs.empty:
        print(f"no finished rows in {folder}; nothing to draw")
        return None, ""
    quality, cost = list(frontier_cfg["quality"]), list(frontier_cfg["cost"])
    plot = plot_frontiers(configs, quality, cost, folder / "frontier.png", title=_title(configs))
    table = frontier_table(configs, quality[0], cost[0])
    timer = configs["timer"].iloc[0] if "timer" in configs else None
    text = (f"{_title(configs)}\n\n" + markdown_table(table)
            + ("\n\nTimes are CPU wall clock: time ratios, not speedups of the method." if timer == "cpu_wall" else ""))
    atomic_write(folder / "frontier.md", (text + "\n").encode())
    print(text)
    print(f"\nfrontier plot: {plot}")
    return plot, text


def markdown_table(df: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub markdown table (floats to ``digits`` significant figures, missing values as '-')."""
    def cell(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "-"
        if isinstance(v, (float, np.floating)):
            return "inf" if np.isinf(v) else f"{v:.{digits}g}"
        return str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _title(configs: pd.DataFrame) -> str:
    parts = [f"{c}: {', '.join(map(str, configs[c].dropna().unique()))}" for c in ("model", "workload", "hardware")
             if c in configs]
    return " | ".join(parts)
