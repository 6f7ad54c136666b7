"""Pareto frontiers of a results folder: quality (PSNR, SSIM, LPIPS, attention error) against cost
(speedup, density, FLOPs). Rows are first averaged per method configuration over prompts and seeds, with a
95 % t-interval; methods are also compared at matched sparse density (``eval.compare``).

    from eval.frontier import load_configs, pareto_mask, frontier_figure, plot_frontiers
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from eval.compare import (BOOTSTRAP_SEED, check_against, disambiguate, matched, sparse_curve_rows, t_interval,
                          with_curves)
from eval.results import atomic_write, load_results

HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False, "lpips_vgg": False, "rel_l2": False,
                    "cos_err": False, "density": False, "sparse_density": False, "flops_ratio": False,
                    "speedup_e2e": True, "speedup_step": True, "speedup_attn": True}
LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS (AlexNet)", "lpips_vgg": "LPIPS (VGG)",
          "rel_l2": "relative L2 error", "cos_err": "cosine error", "density": "attention density",
          "sparse_density": "density of sparse calls", "flops_ratio": "FLOPs / dense FLOPs",
          "speedup_e2e": "end-to-end speedup", "speedup_step": "per-step speedup", "speedup_attn": "attention speedup"}
GROUP = ["sweep", "model", "workload", "hardware", "method", "config_key"]
COMPARE_GROUP = ["model", "workload", "hardware"]  # rows compared item by item (one table each)
INTERVAL = [*HIGHER_IS_BETTER, "flops"]  # the per-config means that get a 95 % interval (``<metric>_ci95``)
CI = " ±95%"  # a display table's column '<name> ±95%' holds the interval half-width of column '<name>'
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h"]


def axis_label(metric: str, timer: str | None = None, processes: int = 1) -> str:
    label = LABELS.get(metric, metric)
    if metric.startswith("speedup") and timer == "cpu_wall":  # CPU timings are never called speedups
        label = label.replace("speedup", "dense time / time (CPU wall clock"
                              + (f", {processes} processes)" if processes > 1 else ")"))
    return label


def load_configs(folder) -> pd.DataFrame:
    """``config_means`` of every row of a results folder."""
    return config_means(load_results(folder))


def config_means(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per method configuration (and model, workload, hardware): metrics averaged over the finished rows,
    with the half-width of their 95 % t-interval over those rows (``<metric>_ci95``), ``rows`` (n) and
    ``writers`` (the processes that wrote them, 'host/pid', where rows record it)."""
    df = rows
    if "status" in df:
        df = df[df["status"] == "ok"]
    if df.empty:
        return df
    df = with_curves(df.assign(_writer=_writer_ids(df)))
    group = [c for c in GROUP if c in df] + ([] if "config_key" in df else ["label"])
    groups = df.groupby(group, dropna=False, sort=True)
    numeric = [c for c in df.columns if c not in group and pd.api.types.is_numeric_dtype(df[c])
               and not c.startswith("method.") and c not in ("order", "pid")]
    agg = groups[numeric].mean().reset_index()
    agg["rows"] = groups.size().values
    for col in [c for c in INTERVAL if c in numeric]:
        agg[f"{col}_ci95"] = groups[col].agg(lambda v: t_interval(v)[1]).values
    agg["writers"] = groups["_writer"].agg(lambda v: ";".join(sorted(set(v.dropna())))).values
    for col in ["label", "timer", "order", "reference", "family", "family_key", "budget", "curve", "curve_key",
                *[c for c in df.columns if c.startswith("method.")]]:
        if col in df and col not in group:
            agg[col] = groups[col].first().values
    return disambiguate(agg, "label", "config_key")


def _writer_ids(rows: pd.DataFrame) -> pd.Series:
    """'host/pid' of the process that wrote each row; missing where rows do not record it."""
    if "host" not in rows or "pid" not in rows:
        return pd.Series(None, index=rows.index, dtype=object)
    ok = rows["host"].notna() & rows["pid"].notna()
    return (rows["host"].astype(str) + "/" + rows["pid"].astype(str)).where(ok, None)


def process_count(configs: pd.DataFrame) -> int:
    """How many processes wrote these configurations' rows (1 where rows do not record host and pid)."""
    if "writers" not in configs:
        return 1
    ids = {w for cell in configs["writers"].dropna() for w in str(cell).split(";") if w}
    return max(1, len(ids))


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
    """Every configuration with its quality/cost (mean and ``<col> ±95%``), n, and whether it is on the
    (all-method) frontier."""
    extra = ("density", "flops_ratio", "speedup_e2e", "speedup_attn")
    table = with_intervals(configs, ["method", "label", quality, cost, *extra])
    if quality in configs and cost in configs:
        table["frontier"] = pareto_mask(configs[cost], configs[quality], HIGHER_IS_BETTER.get(cost, True),
                                        HIGHER_IS_BETTER.get(quality, True))
        table = table.sort_values(cost, ascending=not HIGHER_IS_BETTER.get(cost, True))
    return table.reset_index(drop=True)


def with_intervals(configs: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The given columns of ``configs`` (those with a value), each metric with its '<col> ±95%' beside it (shown as
    'mean ± half-width' by ``markdown_table``), and n."""
    cols = list(dict.fromkeys(c for c in columns if c in configs and configs[c].notna().any()))
    table = configs[cols].copy()
    for col in cols:
        if f"{col}_ci95" in configs:
            table[f"{col}{CI}"] = configs[f"{col}_ci95"]
    table["n"] = configs["rows"]
    return table


def frontier_figure(configs: pd.DataFrame, quality: list[str], cost: list[str], title: str | None = None):
    """One subplot per (quality, cost) pair: every configuration as a point with its 95 % interval on both axes
    and its budget written beside it; one colour per method and one marker per config family (legend entry per
    family), each method's own frontier as a line; the reference as a star where its value is finite, and said in
    words where it is not (PSNR = ∞). Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    quality = [q for q in quality if q in configs and configs[q].notna().any()]
    cost = [c for c in cost if c in configs and configs[c].notna().any()]
    if not quality or not cost:
        raise ValueError(f"no plottable axes: quality {quality}, cost {cost} among columns {sorted(configs.columns)}")
    configs = configs if "curve" in configs else with_curves(configs)
    configs = configs.assign(reference=configs["reference"].astype(bool))
    timer = configs["timer"].iloc[0] if "timer" in configs else None
    processes = process_count(configs)
    style = _styles(configs)
    fig, axes = plt.subplots(len(quality), len(cost), figsize=(4.4 * len(cost), 3.6 * len(quality)), squeeze=False,
                             layout="constrained")
    reference_drawn = False
    for (qi, q), (ci, c) in ((a, b) for a in enumerate(quality) for b in enumerate(cost)):
        ax = axes[qi][ci]
        points = configs[configs[c].notna() & configs[q].notna()]
        infinite = points[np.isinf(points[q].astype(float))]
        points = points.drop(infinite.index)
        ref = points[points["reference"]]
        if len(ref):
            ax.scatter(ref[c], ref[q], marker="*", s=160, color="k", zorder=4)
            reference_drawn = True
        for _, part in points[~points["reference"]].groupby("method", sort=False):
            for key, fam in part.groupby("curve_key", sort=False):
                colour, marker = style[key]
                ax.scatter(fam[c], fam[q], color=colour, marker=marker, alpha=0.85, zorder=3)
            _error_bars(ax, part, c, q, style[part["curve_key"].iloc[0]][0])
            for _, row in part.iterrows():
                if row["budget"]:
                    ax.annotate(row["budget"], (row[c], row[q]), textcoords="offset points", xytext=(4, 3),
                                fontsize=7, color=style[row["curve_key"]][0])
            front = part[pareto_mask(part[c], part[q], HIGHER_IS_BETTER.get(c, True), HIGHER_IS_BETTER.get(q, True))]
            front = front.sort_values(c)
            ax.plot(front[c], front[q], color=style[part["curve_key"].iloc[0]][0], lw=1.2, zorder=2)
        if len(infinite):  # a value that cannot be drawn on the axis is written on it
            name = LABELS.get(q, q).split(" (")[0]
            lines = [f"{r['label']}: " + (f"exact, {name} = ∞" if r["reference"] else f"{name} = ∞ (not drawn)")
                     for _, r in infinite.iterrows()]
            ax.text(0.02, 0.98, "\n".join(lines), transform=ax.transAxes, va="top", fontsize=8,
                    bbox=dict(boxstyle="round", fc="white", ec="0.7", alpha=0.9))
        ax.set_xlabel(axis_label(c, timer, processes))
        ax.set_ylabel(axis_label(q, timer, processes))
        ax.grid(alpha=0.3)
    handles = []
    if reference_drawn:
        label = ", ".join(configs.loc[configs["reference"], "label"].astype(str).unique())
        handles.append(Line2D([], [], color="k", marker="*", markersize=11, ls="none", label=f"{label} (exact)"))
    handles += [Line2D([], [], color=colour, marker=marker, ls="none", label=label)
                for label, colour, marker in _legend_entries(configs, style)]
    # the title, then the legend under it, then the axes: rows of inches turned into fractions of the figure
    ncol = max(1, min(len(handles), round(fig.get_figwidth() / 2.2)))  # about 2.2 inches an entry
    height = fig.get_figheight()
    top = 1 - (0.35 + 0.28 * -(-len(handles) // ncol)) / height
    fig.get_layout_engine().set(rect=(0, 0, 1, top))
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, top), ncol=ncol, fontsize=9, frameon=False)
    fig.suptitle(title if title is not None else figure_title(configs), y=1 - 0.08 / height, va="top")
    notes = _footnotes(configs, timer, processes)
    if notes:  # below the axes; savefig(bbox_inches="tight") keeps it
        fig.text(0.01, 0.0, "\n".join(notes), fontsize=8, va="top", ha="left")
    return fig


def plot_frontiers(configs: pd.DataFrame, quality: list[str], cost: list[str], path, title: str | None = None) -> Path:
    """``frontier_figure`` written to ``path`` (PNG, atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = frontier_figure(configs, quality, cost, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buf.getvalue())  # two reports of one folder at once never share a temporary file
    return path


def _styles(configs: pd.DataFrame) -> dict:
    """(colour, marker) per curve key: a colour per method and a marker per config family of that method, both in
    table order (the rows' ``order``, then the label), never chosen by name."""
    sparse = configs[~configs["reference"]].sort_values(["order", "curve"])
    style = {}
    for i, method in enumerate(dict.fromkeys(sparse["method"])):
        keys = dict.fromkeys(sparse.loc[sparse["method"] == method, "curve_key"])
        style.update({key: (f"C{i % 10}", MARKERS[j % len(MARKERS)]) for j, key in enumerate(keys)})
    return style


def _legend_entries(configs: pd.DataFrame, style: dict) -> list[tuple[str, str, str]]:
    sparse = configs[~configs["reference"]].sort_values(["order", "curve"])
    first = sparse.drop_duplicates("curve_key")
    return [(row["curve"], *style[row["curve_key"]]) for _, row in first.iterrows()]


def _error_bars(ax, part: pd.DataFrame, x: str, y: str, colour: str) -> None:
    for col, kw in ((y, "yerr"), (x, "xerr")):
        err = part.get(f"{col}_ci95")
        if err is None:
            continue
        has = err.notna() & np.isfinite(part[x].astype(float)) & np.isfinite(part[y].astype(float))
        if has.any():
            ax.errorbar(part.loc[has, x], part.loc[has, y], **{kw: err[has]}, fmt="none", ecolor=colour,
                        elinewidth=0.8, capsize=2, alpha=0.6, zorder=2)


def _footnotes(configs: pd.DataFrame, timer, processes: int, intervals: str = "Bars") -> list[str]:
    sparse = configs[~configs["reference"].astype(bool)]
    ns = sorted(set(sparse["rows"].astype(int))) if "rows" in sparse else []
    if ns == [1]:
        notes = ["n = 1 per configuration: no intervals."]
    else:
        notes = [f"{intervals}: 95 % t-intervals over prompts and seeds (n = {', '.join(map(str, ns))} per "
                 "configuration)" + ("; none where n = 1." if 1 in ns else ".")] if ns else []
    if timer == "cpu_wall":
        notes.append("Time ratios are CPU wall clock, not speedups of the method.")
        if processes > 1:
            notes.append(f"They were measured by {processes} processes: each ratio compares dense and sparse inside "
                         "one process, under that process's load, and ratios of different processes share the axis.")
    return notes


def report(folder, frontier_cfg, rows: pd.DataFrame | None = None) -> tuple[Path, str]:
    """Write ``frontier.png`` and ``frontier.md`` into a results folder; print the table and the plot path.
    ``rows``: the folder's rows where the caller has them already (None: loaded)."""
    folder = Path(folder)
    rows = load_results(folder) if rows is None else rows
    configs = config_means(rows)
    if configs.empty:
        print(f"no finished rows in {folder}; nothing to draw")
        return None, ""
    quality, cost = list(frontier_cfg["quality"]), list(frontier_cfg["cost"])
    plot = plot_frontiers(configs, quality, cost, folder / "frontier.png")
    table = frontier_table(configs, quality[0], cost[0])
    timer = configs["timer"].iloc[0] if "timer" in configs else None
    notes = _footnotes(configs, timer, process_count(configs), intervals="±")
    text = f"{figure_title(configs)}\n\n" + markdown_table(table) + "\n\n" + " ".join(notes)
    densities = list(frontier_cfg.get("matched_density") or [])
    if densities:
        try:
            text += "\n\n" + matched_tables(rows, [quality[0]], densities, frontier_cfg.get("against"))[1]
        except ValueError as e:  # a misspelt metrics.frontier.against: the rest of the report still stands
            text += f"\n\nmetrics.frontier.{e}"
    atomic_write(folder / "frontier.md", (text + "\n").encode())
    print(text)
    print(f"\nfrontier plot: {plot}")
    return plot, text


def comparison_groups(rows: pd.DataFrame):
    """(title, rows) per (model, workload, hardware): the rows that share items and are compared with each other."""
    keys = [k for k in COMPARE_GROUP if k in rows]
    if not keys:
        yield "", rows
        return
    for group, part in rows.groupby(keys, dropna=False, sort=True):
        group = group if isinstance(group, tuple) else (group,)
        yield " | ".join(f"{k}: {v}" for k, v in zip(keys, group)), part


def matched_tables(rows: pd.DataFrame, metrics: list[str], densities: list[float], against: str | None = None):
    """(tidy frame, markdown) of every metric at matched sparse density, per comparison group: the mean over
    items with its t-interval, and the paired difference against one family with its bootstrap interval."""
    if against is not None:
        sparse = sparse_curve_rows(rows)
        check_against(against, sorted(set(sparse["curve"])) if len(sparse) else [])
    frames, text = [], []
    for title, part in comparison_groups(rows):
        sections = []
        for metric in metrics:
            if metric not in part or not part[metric].notna().any():
                continue
            try:
                table = matched(part, metric, densities, against)
            except ValueError:  # ``against`` ran in another group only
                sections.append(f"{LABELS.get(metric, metric)}: no method family {against!r} in this group.")
                continue
            if table.empty:
                continue
            frames.append(table.assign(group=title, metric=metric))
            sections.append(_matched_markdown(table, metric, densities))
        if sections:
            text.append((f"#### {title}\n\n" if title else "") + "\n\n".join(sections))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return frame, "\n\n".join(text)


def _matched_markdown(table: pd.DataFrame, metric: str, densities: list[float]) -> str:
    name = LABELS.get(metric, metric)
    against = table["against"].iloc[0]
    means, diffs = [], []
    for curve, part in table.groupby("curve", sort=False):
        part = part.set_index("density")
        mean = {"method": curve, "n": int(part["n"].iloc[0])}
        diff = {"method": curve, "n": int(part["n_paired"].iloc[0])}
        for d in densities:
            mean[f"d={d:g}"], mean[f"d={d:g}{CI}"] = part.loc[d, "mean"], part.loc[d, "ci95"]
            diff[f"Δ at d={d:g}"] = format_range(*part.loc[d, ["diff", "diff_low", "diff_high"]])
        means.append(mean)
        if curve != against:
            diffs.append(diff)
    better = "higher" if HIGHER_IS_BETTER.get(metric, True) else "lower"
    text = (f"{name} at matched density of the sparse calls (each method family's budget curve interpolated per "
            f"prompt and seed in log-density; mean ± 95 % t-interval over its n items; — where its budgets do not "
            f"reach a density, never extrapolated):\n\n" + markdown_table(pd.DataFrame(means)))
    if diffs:
        text += (f"\n\nPaired difference against {against} (method − {against} over the prompts and seeds both "
                 f"ran, n of them; [bootstrap 95 % interval], seed {BOOTSTRAP_SEED}; {better} {name} is better)."
                 + (" With 5 or fewer items a bootstrap interval cannot leave the range of the item differences, "
                    "so it understates the uncertainty." if 1 < min(d["n"] for d in diffs) <= 5 else "")
                 + "\n\n" + markdown_table(pd.DataFrame(diffs)))
    return text


def format_interval(mean, half) -> str:
    """'16.3 ± 5.7': to the decimals that give the half-width two significant digits (the mean at least three);
    the mean alone where the interval is absent (n = 1) or of zero width (exact values)."""
    if mean is None or pd.isna(mean):
        return "—"
    if np.isinf(mean):
        return "inf" if mean > 0 else "-inf"
    if half is None or pd.isna(half) or half == 0:
        return f"{mean:.4g}"
    dec = max(_decimals(half), _decimals(mean, digits=3)) if mean else _decimals(half)
    return f"{mean:.{dec}f} ± {half:.{dec}f}"


def format_range(value, low, high) -> str:
    """'-1.15 [-2.9, 0.60]': the value and its interval to the decimals of the interval's half-width."""
    if value is None or pd.isna(value):
        return "—"
    if pd.isna(low) or pd.isna(high):
        return f"{value:.3g}"
    half = (high - low) / 2
    if half == 0:
        return f"{value:.4g} [{low:.4g}, {high:.4g}]"
    dec = _decimals(half)
    return f"{value:.{dec}f} [{low:.{dec}f}, {high:.{dec}f}]"


def _decimals(value: float, digits: int = 2) -> int:
    """Decimals that show ``digits`` significant digits of ``value`` (0 to 8)."""
    return int(min(8, max(0, digits - 1 - np.floor(np.log10(abs(value))))))


def markdown_table(df: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub markdown table: floats to ``digits`` significant figures, missing values as '—'; a column
    '<name> ±95%' is shown inside column '<name>' as 'mean ± half-width'."""
    def cell(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "—"
        if isinstance(v, (float, np.floating)):
            return "inf" if np.isinf(v) else f"{v:.{digits}g}"
        return str(v)

    shown = [c for c in df.columns if not str(c).endswith(CI)]
    rows = []
    for _, row in df.iterrows():
        rows.append([format_interval(row[c], row[f"{c}{CI}"]) if f"{c}{CI}" in df else cell(row[c]) for c in shown])
    lines = ["| " + " | ".join(map(str, shown)) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def figure_title(configs: pd.DataFrame) -> str:
    """'model: ... | workload: ... | hardware: ...' of the configurations."""
    parts = [f"{c}: {', '.join(map(str, configs[c].dropna().unique()))}" for c in COMPARE_GROUP if c in configs]
    return " | ".join(parts) or "frontiers"
